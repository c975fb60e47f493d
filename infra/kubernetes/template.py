"""Write `gpu-job-template.json`: prefect-kubernetes' own default base job template, plus what a GPU job needs.

Run from the repository root: `python infra/kubernetes/template.py` (a test checks the file is what this writes,
so the template follows the worker's default when prefect-kubernetes changes it).

Added to the default, as variables with defaults:
- `gpus`: `nvidia.com/gpu` requested and limited (an integer; 8 for a post-training node, 1 for evals);
- `node_selector` and `tolerations`: where GPU pods may go (NVIDIA's device-plugin label and taint by default);
- `shm_size`: a memory-backed `/dev/shm` (NCCL and data loaders need more than the container default of 64 MB);
- `home_claim`: the volume claim mounted at `/var/lib/shipyard` (SHIPYARD_HOME): candidates and eval results pass
  between the release run and its stage runs through this shared cache, by digest;
- `nodes`: machines one stage spans. The Job runs that many pods (completion mode Indexed), each through
  `python -m shipyard.posttraining.nodes --nodes=N -- <Prefect's command>`: pod 0 runs the stage run, the others
  join its post-training as torchrun machines 1..N-1 through the shared home (that module says how). 1 (the
  default): one pod that runs the stage run, as the worker's default does;
- `env` defaults to SHIPYARD_HOME on that volume; `image` is the default's own variable (Shipyard's image from
  `infra/Dockerfile`).

`completions` and `parallelism` are Job fields: the Job's spec gets them, as `nodes`. The default also has them,
as 1, in the pod template, where the Kubernetes schema has no such fields (the API server drops them with a
warning); they stay there, because prefect-kubernetes refuses a template without them.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from prefect_kubernetes.worker import KubernetesWorker

HERE = Path(__file__).parent
HOME = "/var/lib/shipyard"

VARIABLES: dict[str, dict[str, Any]] = {
    "gpus": {
        "title": "GPUs",
        "description": "NVIDIA GPUs per pod, requested and limited: 8 for post-training on a node, 1 for evals.",
        "type": "integer",
        "minimum": 0,
        "default": 1,
    },
    "node_selector": {
        "title": "Node selector",
        "description": "Labels a node must carry to run the job.",
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": {"nvidia.com/gpu.present": "true"},
    },
    "tolerations": {
        "title": "Tolerations",
        "description": "Taints the job tolerates (GPU nodes are usually tainted).",
        "type": "array",
        "items": {"type": "object"},
        "default": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "shm_size": {
        "title": "Shared memory",
        "description": "Size of the memory-backed /dev/shm (NCCL, data loader workers).",
        "type": "string",
        "default": "16Gi",
    },
    "nodes": {
        "title": "Machines",
        "description": "Pods (machines) one stage spans: post-training runs across all of them (torchrun), each"
        " with `gpus` GPUs; 2 for a 2x8-GPU post-training.",
        "type": "integer",
        "minimum": 1,
        "default": 1,
    },
    "home_claim": {
        "title": "Shipyard home volume claim",
        "description": f"PVC mounted at {HOME} (SHIPYARD_HOME): the shared cache of snapshots, candidates, evals.",
        "type": "string",
        "default": "shipyard-home",
    },
}


def gpu_job_template() -> dict[str, Any]:
    """The default base job template of the Kubernetes worker, with the GPU variables above wired in."""
    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    properties = template["variables"]["properties"]
    properties["env"]["default"] = {"SHIPYARD_HOME": HOME, "HF_HUB_DISABLE_TELEMETRY": "1"}
    properties |= copy.deepcopy(VARIABLES)
    job = template["job_configuration"]["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    for field in ("completions", "parallelism"):
        job[field] = "{{ nodes }}"
    job["completionMode"] = "Indexed"  # each pod knows its machine rank: JOB_COMPLETION_INDEX
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    pod["volumes"] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "{{ shm_size }}"}},
        {"name": "shipyard-home", "persistentVolumeClaim": {"claimName": "{{ home_claim }}"}},
    ]
    [container] = pod["containers"]
    container["command"] = ["python", "-m", "shipyard.posttraining.nodes", "--nodes={{ nodes }}", "--"]
    for resources in (container["resources"]["limits"], container["resources"]["requests"]):
        resources["nvidia.com/gpu"] = "{{ gpus }}"
    container["volumeMounts"] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "shipyard-home", "mountPath": HOME},
    ]
    return template


def render() -> str:
    return json.dumps(gpu_job_template(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    out = HERE / "gpu-job-template.json"
    out.write_text(render())
    sys.stdout.write(f"wrote {out}\n")
