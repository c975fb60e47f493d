"""The demo profile: the demo's recipe, gate policy, screening suite and eval suites (`profile: demo`).

Offered to the core through the `shipyard.profiles` entry point (pyproject.toml); nothing else imports the demo.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.profiles import Profile

HERE = Path(__file__).parent
RECIPE = HERE / "recipes" / "default.yaml"
POLICY = HERE / "policies" / "default.yaml"
SUITES = {name: HERE / "suites" / f"{name}.yaml" for name in ("capability", "safety", "screening")}

DEMO = Profile(
    recipe=RECIPE,
    policy=POLICY,
    screening_suite="screening",
    screening_task="shipyard_arithmetic_heldout",
    suites=SUITES,
)
