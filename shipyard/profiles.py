"""The demo profile: what Shipyard uses where a deployment names its own recipe, gate policy and screening suite.

Outside `profile: demo` (which `shipyard demo` writes into its config) nothing falls back to the demo's tiny
arithmetic task: an unset choice is an error naming the setting, so a lab never gates a real model on it.
"""

from __future__ import annotations

from typing import Any

from shipyard.errors import ConfigError
from shipyard.evals.policy import DEFAULT_POLICY
from shipyard.posttraining.recipe import DEFAULT_RECIPE
from shipyard.settings import Settings

DEMO: dict[str, Any] = {
    "recipe": DEFAULT_RECIPE,
    "policy": DEFAULT_POLICY,
    "screening_suite": "capability",
    "screening_task": "shipyard_arithmetic_heldout",
}
WHAT = {
    "recipe": "the post-training recipe YAML",
    "policy": "the gate policy YAML",
    "screening_suite": "the suite (name or YAML) a raw checkpoint is screened on",
    "screening_task": "the task of that suite to screen on",
}


def check(settings: Settings) -> None:
    """Every choice the pipeline will need is made (before a watcher starts Prefect and polls)."""
    for key in ("recipe", "policy", *(("screening_suite", "screening_task") if settings.pipeline.screening else ())):
        choice(settings, key)


def choice(settings: Settings, key: str, given: Any = None) -> Any:
    """`given` (a command's option), else `pipeline.<key>`, else the demo's under `profile: demo`, else an error."""
    value = given if given is not None else getattr(settings.pipeline, key)
    if value is not None:
        return value
    if settings.profile == "demo":
        return DEMO[key]
    raise ConfigError(
        f"pipeline.{key} is not set: name {WHAT[key]} (or set profile: demo for the demo's)", setting=f"pipeline.{key}"
    )
