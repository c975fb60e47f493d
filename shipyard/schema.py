"""YAML data with a schema: recipes (and later suites and gate policies) parsed into pydantic models.

`load_yaml` reads a YAML file into a model and turns every problem into one
`ConfigError` that names the file, the key, the value found and what was
expected; an unknown key gets a "did you mean" and the valid keys. The
settings module shares `did_you_mean` and `fields_at`.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from shipyard.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, model: type[M]) -> M:
    """The YAML mapping in `path` as a `model`."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping, found {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: invalid {model.__name__.lower()}:\n  " + "\n  ".join(describe(exc, model))
        ) from None


def describe(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: the key, the value and what was expected."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(part) for part in loc)
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'{did_you_mean(str(loc[-1]), fields_at(model, loc[:-1]))}")
        elif error["type"] == "value_error":  # a check across fields: the message names the values
            lines.append(f"{key}: {error['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{key} = {error['input']!r}: {error['msg']}")
    return lines


def fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the model found at `loc` inside `model` (list indices are stepped over)."""
    for part in loc:
        if isinstance(part, int):
            continue
        inner = _model_in(model.model_fields[part].annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(valid)}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (inner := _model_in(arg)) is not None:
            return inner
    return None
