"""The deployment files are consistent with the code: every entrypoint is a flow, the Terraform validates."""

import asyncio
import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import kubernetes_validate
import pytest
import yaml
from prefect import Flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.flows import load_flow_from_entrypoint
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

ROOT = Path(__file__).parents[1]
INFRA = ROOT / "infra"
PLUGINS = Path("/opt/tf-plugins")  # where this machine kind keeps the AWS provider (no registry is reachable)


def test_every_deployment_names_a_flow_and_a_pool() -> None:
    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    gpu_variables = json.loads((INFRA / "kubernetes" / "gpu-job-template.json").read_text())["variables"]["properties"]
    names = set()
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])  # as a worker loads it: a module of the package
        assert isinstance(flow, Flow), deployment["entrypoint"]
        names.add(f"{flow.name}/{deployment['name']}")
        pool = deployment["work_pool"]
        assert pool["name"] in ("shipyard-light", "shipyard-gpu")
        if pool["name"] == "shipyard-gpu":  # sizes the Kubernetes template takes
            assert set(pool["job_variables"]) <= set(gpu_variables), pool["job_variables"]
    env = spec["definitions"]["env"]  # the deployments the flows start are the ones declared
    assert {v for k, v in env.items() if k.endswith("_DEPLOYMENT")} <= names
    watch = next(d for d in spec["deployments"] if d["entrypoint"].endswith(":watch_run"))
    assert watch["schedules"], "the watch flow runs on a schedule"


def gpu_template_module() -> Any:
    return runpy.run_path(str(INFRA / "kubernetes" / "template.py"))


def test_the_gpu_job_template_is_the_kubernetes_workers_default_plus_gpu_variables() -> None:
    template = json.loads((INFRA / "kubernetes" / "gpu-job-template.json").read_text())
    assert json.dumps(template, indent=2, sort_keys=True) + "\n" == gpu_template_module()["render"](), (
        "gpu-job-template.json is stale: python infra/kubernetes/template.py"
    )
    default = KubernetesWorker.get_default_base_job_template()["variables"]["properties"]
    ours = template["variables"]["properties"]
    for name, schema in default.items():  # every variable the worker knows, with the same schema
        assert {k: v for k, v in ours[name].items() if k != "default"} == {
            k: v for k, v in schema.items() if k != "default"
        }, name
    assert set(ours) - set(default) == {"gpus", "node_selector", "tolerations", "shm_size", "home_claim", "nodes"}


def rendered(values: dict[str, Any]) -> tuple[dict[str, Any], FlowRun]:
    """The Job prefect-kubernetes' worker would create for a flow run of a deployment with these job variables."""
    template = json.loads((INFRA / "kubernetes" / "gpu-job-template.json").read_text())
    unused = PrefectClient(api="http://127.0.0.1:9/api")  # asked only for block and variable references: none
    render = KubernetesWorkerJobConfiguration.from_template_and_values(template, values, client=unused)
    configuration = asyncio.run(render)
    run = FlowRun(flow_id=uuid4(), name="step-10", deployment_id=uuid4())
    configuration.prepare_for_flow_run(run)
    manifest = configuration.job_manifest
    valid = json.loads(json.dumps(manifest))
    pod = valid["spec"]["template"]["spec"]
    # prefect-kubernetes refuses a template without these two in the pod (1 each); the API server drops them
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    kubernetes_validate.validate(valid, kubernetes_validate.latest_version(), strict=True)  # raises if invalid
    return manifest, run


def test_a_flow_run_rendered_by_prefect_kubernetes_is_a_valid_gpu_job() -> None:
    values = {"image": "registry.example/shipyard:0.1.0", "gpus": 8, "shm_size": "64Gi", "cpu_request": "32"}
    values |= {"node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "namespace": "ml"}
    manifest, run = rendered(values)
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example/shipyard:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["args"] == ["prefect", "flow-run", "execute"]  # the run is named by PREFECT__FLOW_RUN_ID
    # one machine by default: one pod, and the wrapper runs Prefect's command as it is
    assert container["command"] == ["python", "-m", "shipyard.posttraining.nodes", "--nodes=1", "--"]
    assert (manifest["spec"]["completions"], manifest["spec"]["parallelism"]) == (1, 1)
    assert {"name": "PREFECT__FLOW_RUN_ID", "value": str(run.id)} in container["env"]
    assert {"name": "SHIPYARD_HOME", "value": "/var/lib/shipyard"} in container["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]
    assert manifest["metadata"]["namespace"] == "ml"

    two, _ = rendered(values | {"nodes": 2})  # a 2x8-GPU post-training: two pods of one Job, machine ranks 0 and 1
    spec = two["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (2, 2, "Indexed")
    assert spec["template"]["spec"]["containers"][0]["command"][-2:] == ["--nodes=2", "--"]
    from shipyard.posttraining.nodes import main

    with pytest.raises(SystemExit):  # the wrapper's own arguments, as the template writes them, parse
        main(["--nodes=2", "--help"])

    broken = json.loads(json.dumps(manifest))
    for field in ("completions", "parallelism", "nodeSelector"):
        broken["spec"]["template"]["spec"].pop(field)
    broken["spec"]["completions"] = "two"  # the check sees a wrong value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.skipif(shutil.which("terraform") is None or not PLUGINS.is_dir(), reason="terraform not installed")
def test_terraform_for_the_release_bucket_validates(tmp_path: Path) -> None:
    shutil.copy(INFRA / "terraform" / "main.tf", tmp_path)
    init = ["terraform", "init", "-backend=false", "-input=false", f"-plugin-dir={PLUGINS}"]
    subprocess.run(init, cwd=tmp_path, check=True, capture_output=True)
    validated = subprocess.run(["terraform", "validate", "-json"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(validated.stdout)["valid"], validated.stdout
    text = (tmp_path / "main.tf").read_text()
    assert "abort_incomplete_multipart_upload" in text


def test_the_bucket_policy_keeps_the_ledger_whole_and_the_docs_give_the_terraforms_days() -> None:
    text = (INFRA / "terraform" / "main.tf").read_text()
    statements = {
        m["sid"]: m["body"]
        for m in re.finditer(r'statement \{\s*sid\s*=\s*"(?P<sid>\w+)"(?P<body>.*?)\n  \}', text, re.S)
    }
    for sid, action in (("LedgerIsWriteOnce", '"s3:PutObject"'), ("LedgerIsNeverCut", '"s3:DeleteObject"')):
        body = statements[sid]
        assert 'effect    = "Deny"' in body and action in body and "/*ledger/*" in body, sid
    assert '"s3:DeleteObjectVersion"' not in statements["LedgerIsNeverCut"]  # Object Lock refuses those
    days = re.search(r'variable "abort_incomplete_uploads_after_days" \{.*?default\s*=\s*(\d+)', text, re.S)
    assert days is not None
    docs = (ROOT / "docs" / "orchestration.md").read_text()
    said = re.findall(r"after (\d+|a) days?\)?", " ".join(docs.split()))
    assert said and set(said) == {days[1]}, said


def test_the_dockerfile_passes_hadolint_and_copies_what_exists() -> None:
    dockerfile = INFRA / "Dockerfile"
    linted = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "--failure-threshold", "info", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout
    copies = [line.split()[1:-1] for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")]
    assert all((ROOT / source).exists() for sources in copies for source in sources), copies
    torch_pin = re.search(r"torch==[0-9.]+", (ROOT / "Makefile").read_text())
    assert torch_pin and torch_pin.group() in dockerfile.read_text()  # the same torch as the tested setup


def test_the_image_runs_its_own_kubernetes_worker_and_the_vllm_example_fits_the_eval_pods_gpus() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("prefect-kubernetes") for d in extras["kubernetes"])
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "ARG EXTRAS=kubernetes" in dockerfile and '".[$EXTRAS]"' in dockerfile
    deployments = yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]
    [evaluate] = [d for d in deployments if d["entrypoint"].endswith(":evaluate_checkpoint")]
    docs = (ROOT / "docs" / "evals.md").read_text()
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "model: vllm" in b]
    args = yaml.safe_load(example)["model_args"]
    assert (
        args["tensor_parallel_size"] * args.get("data_parallel_size", 1)
        == evaluate["work_pool"]["job_variables"]["gpus"]
    )
