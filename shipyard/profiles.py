"""Profiles: named sets of choices (recipe, gate policy, screening suite) and named eval suites, from packages.

A package offers a profile through the `shipyard.profiles` entry-point group (Shipyard's own demo offers `demo`),
so the core finds it by name and imports nothing of the package's until it is asked for. Outside an active
profile (`profile: demo`, which `shipyard demo` writes into its config) nothing falls back to a profile's
choices: an unset choice is an error naming the setting, so a lab never gates a real model on the demo's tiny
arithmetic task. A profile's suites are known by name everywhere (`--suite capability`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError
from shipyard.settings import Settings

GROUP = "shipyard.profiles"
WHAT = {
    "recipe": "the post-training recipe YAML",
    "policy": "the gate policy YAML",
    "screening_suite": "the suite (name or YAML) a raw checkpoint is screened on",
    "screening_task": "the task of that suite to screen on",
}


@dataclass(frozen=True)
class Profile:
    """What a profile chooses where a deployment names nothing, and the eval suites it names."""

    recipe: Path
    policy: Path
    screening_suite: str
    screening_task: str
    suites: dict[str, Path] = field(default_factory=dict)


@cache
def installed() -> dict[str, Profile]:
    """The profiles the installed packages offer, by name."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}


def suites() -> dict[str, Path]:
    """Every installed profile's suites, by name."""
    return {name: path for profile in installed().values() for name, path in profile.suites.items()}


def check(settings: Settings) -> None:
    """Every choice the pipeline will need is made (before a watcher starts Prefect and polls)."""
    for key in ("recipe", "policy", *(("screening_suite", "screening_task") if settings.pipeline.screening else ())):
        choice(settings, key)


def choice(settings: Settings, key: str, given: Any = None) -> Any:
    """`given` (a command's option), else `pipeline.<key>`, else the active profile's, else an error."""
    value = given if given is not None else getattr(settings.pipeline, key)
    if value is not None:
        return value
    if settings.profile is not None:
        profile = installed().get(settings.profile)
        if profile is None:
            raise ConfigError(f"profile {settings.profile!r} is not installed", setting="profile")
        return getattr(profile, key)
    raise ConfigError(
        f"pipeline.{key} is not set: name {WHAT[key]} (or set profile: demo for the demo's)", setting=f"pipeline.{key}"
    )
