"""`shipyard doctor`: what this machine and these settings give Shipyard, checked one line each.

Each check is a pure function of the settings returning a `Check`; none changes anything. A failed
check names what to fix; a warning is something Shipyard works without.
"""

from __future__ import annotations

import platform
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from shipyard.errors import ConfigError, ShipyardError
from shipyard.settings import Settings, prefect_api_url

PACKAGES = ("shipyard", "torch", "transformers", "trl", "peft", "lm_eval", "prefect", "boto3", "huggingface_hub")
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def versions(_: Settings) -> list[Check]:
    checks = [Check("python", OK, f"{platform.python_version()} ({platform.machine()})")]
    for name in PACKAGES:
        try:
            checks.append(Check(name, OK, version(name)))
        except PackageNotFoundError:
            checks.append(Check(name, FAIL, "not installed"))
    return checks


def accelerator(_: Settings) -> list[Check]:
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return [Check("device", OK, f"cuda: {torch.cuda.device_count()} x {', '.join(names)}")]
    if torch.backends.mps.is_available():
        return [Check("device", OK, "mps (Apple GPU)")]
    return [Check("device", WARN, "cpu only: post-training and evals of real models will be slow")]


def prefect_api(_: Settings) -> list[Check]:
    url = prefect_api_url()
    if not url:
        return [Check("prefect api", OK, "ephemeral (started per command; schedules need `shipyard serve`)")]
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as answer:
            healthy = answer.status == 200
    except OSError as exc:
        return [Check("prefect api", FAIL, f"{url}: no answer ({exc})")]
    return [Check("prefect api", OK if healthy else FAIL, f"{url}: {'healthy' if healthy else 'unhealthy'}")]


def release_store(settings: Settings) -> list[Check]:
    from shipyard.registry.approval_policy import check_root
    from shipyard.registry.approvals import open_store_notice
    from shipyard.registry.releases import Registry
    from shipyard.registry.stores import release_store as opened

    try:
        store = opened(settings)
        state = Registry.of(store, settings).state()  # unchecked: the doctor reports what a reader would refuse
        check_root(state.root, settings.trust.owners, store.uri, settings.trust.allow_unpinned)
    except ShipyardError as exc:
        return [Check("release store", FAIL, str(exc))]
    if state.events == 0:
        return [Check("release store", WARN, f"{store.uri}: empty (no ledger yet)")]
    lines = sorted({line for line, _ in state.releases})
    detail = f"{store.uri}: {state.events} events, lines {', '.join(lines) or 'none'}"
    checks = [Check("release store", OK, detail)]
    if state.policy is None:
        checks.append(Check("policy", FAIL, str(open_store_notice(state, store.uri))))
    elif not settings.trust.owners:
        checks.append(Check("policy", WARN, "read unpinned (trust.allow_unpinned): pin its owners: shipyard trust pin"))
    else:
        checks.append(Check("policy", OK, f"v{state.policy.version}, owners pinned"))
    return checks


def choices(settings: Settings) -> list[Check]:
    """The recipe, the gate policy with its suites, and the screening suite and task: each loads. One not set
    is a warning: only the pipeline needs them, not a reader or an approver."""
    from shipyard.evals.gate_policy import load_gate_policy
    from shipyard.evals.suite import load_suite
    from shipyard.posttraining.recipe import load_recipe
    from shipyard.profiles import choice

    def recipe() -> str:
        path = choice(settings, "recipe")
        return f"{path}: {', '.join(s.name for s in load_recipe(path).stages)}"

    def policy() -> str:
        path = choice(settings, "policy")
        return f"{path}: {sum(len(load_suite(ref).tasks) for ref in load_gate_policy(path).suite_refs())} task(s)"

    def screening() -> str:
        suite, task = choice(settings, "screening_suite"), choice(settings, "screening_task")
        if task not in load_suite(suite).tasks:
            raise ConfigError(f"pipeline.screening_task {task!r} is not a task of {suite}")
        return f"{task} of {suite}"

    checks = []
    for name, loaded in (("recipe", recipe), ("gate policy", policy), ("screening", screening)):
        if name == "screening" and not settings.pipeline.screening:
            continue
        try:
            checks.append(Check(name, OK, loaded()))
        except ShipyardError as exc:
            unset = " is not set" in str(exc)
            checks.append(Check(name, WARN if unset else FAIL, f"{exc}{'; only the pipeline needs it' * unset}"))
    return checks


def browser(_: Settings) -> list[Check]:
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found is None:
        return [Check("chromium", WARN, "not found: only the dashboard's browser tests need it")]
    return [Check("chromium", OK, found)]


CHECKS: tuple[Callable[[Settings], list[Check]], ...] = (
    versions,
    accelerator,
    prefect_api,
    release_store,
    choices,
    browser,
)


def diagnose(settings: Settings) -> list[Check]:
    return [check for run in CHECKS for check in run(settings)]
