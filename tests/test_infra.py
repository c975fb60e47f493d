"""The deployment files are consistent with the code: every entrypoint is a flow, the Terraform validates."""

import json
import shutil
import subprocess
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from prefect import Flow

INFRA = Path(__file__).parents[1] / "infra"
PLUGINS = Path("/opt/tf-plugins")  # where this machine kind keeps the AWS provider (no registry is reachable)


def test_every_deployment_names_a_flow_and_a_pool() -> None:
    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(import_module(path.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] in ("shipyard-process", "shipyard-gpu")
    watch = next(d for d in spec["deployments"] if d["entrypoint"].endswith(":watch_run"))
    assert watch["schedules"], "the watch flow runs on a schedule"


def test_gpu_job_template_requests_gpus() -> None:
    template = json.loads((INFRA / "kubernetes" / "gpu-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert "gpus" in template["variables"]["properties"]


@pytest.mark.skipif(shutil.which("terraform") is None or not PLUGINS.is_dir(), reason="terraform not installed")
def test_terraform_for_the_release_bucket_validates(tmp_path: Path) -> None:
    shutil.copy(INFRA / "terraform" / "main.tf", tmp_path)
    init = ["terraform", "init", "-backend=false", "-input=false", f"-plugin-dir={PLUGINS}"]
    subprocess.run(init, cwd=tmp_path, check=True, capture_output=True)
    validated = subprocess.run(["terraform", "validate", "-json"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(validated.stdout)["valid"], validated.stdout
    assert "abort_incomplete_multipart_upload" in (tmp_path / "main.tf").read_text()
