"""What crosses between pools: names, digests and paths inside the shared home, never a pool's own paths.

Pools share one Shipyard home volume but may mount it at different places (`/mnt/shipyard` on a VM,
`/var/lib/shipyard` in a pod), and each reads its own settings. A path a run sends or returns is therefore
rebased from the sender's home to the receiver's (`rebase`), and a stage run hands its result back through the
shared home (`stages/<flow run id>.json`), which every pool can read, not through Prefect's result storage,
which is the pod's own. Pure functions; called by `shipyard.orchestration.prefect.run_stage` and the stage flows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipyard.caches import write_whole
from shipyard.errors import OrchestrationError

STAGE_RESULTS = "stages"


def rebase(value: Any, old: Path, new: Path) -> Any:
    """`value` with every path under `old` (as written, or resolved) moved under `new`; strings elsewhere, and
    everything that is not a string, stay as they are. Tuples come back as lists (as JSON carries them)."""
    if isinstance(value, str):
        for root in dict.fromkeys((str(old), str(old.resolve()))):
            if value == root or value.startswith(root.rstrip("/") + "/"):
                return str(new / value[len(root) :].lstrip("/"))
        return value
    if isinstance(value, dict):
        return {key: rebase(item, old, new) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rebase(item, old, new) for item in value]
    return value


def write_stage_result(home: Path, run_id: str, value: Any) -> Any:
    """Leave a stage run's result in the shared home for the run that started it; `value` back."""
    write_whole(home / STAGE_RESULTS / f"{run_id}.json", json.dumps({"home": str(home), "result": value}))
    return value


def read_stage_result(home: Path, run_id: str, what: str) -> Any:
    """The result stage run `run_id` left in the shared home, its paths rebased onto this pool's `home`."""
    path = home / STAGE_RESULTS / f"{run_id}.json"
    try:
        left = json.loads(path.read_text())
    except FileNotFoundError:
        raise OrchestrationError(
            f"{what} finished but left no result at {path}: do both pools mount the same Shipyard home?"
        ) from None
    return rebase(left["result"], Path(left["home"]), home)
