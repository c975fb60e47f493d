"""`shipyard init`: a directory a real run can start from, through the real command (flags and questions)."""

import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.app.starter import DECIDE
from tests.helpers import make_checkpoint
from tests.hub_server import HubServer

runner = CliRunner()


def cli(*args: str, stdin: str | None = None, **env: str) -> Any:
    return runner.invoke(app, list(args), input=stdin, env={"COLUMNS": "40", **env})


@pytest.fixture
def run(tmp_path: Path, tiny_model_dir: Path) -> Path:
    for step in (50, 100, 150):
        make_checkpoint(tmp_path / "grpo-run", step, tiny_model_dir)
    return tmp_path / "grpo-run"


def test_init_writes_a_config_choices_keys_and_a_signed_policy_that_the_other_commands_take(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPYARD_PROFILE")  # a real run: nothing falls back to the demo's choices
    args = ("init", "--source", str(run), "--dir", "lab", "--approver", "alice", "--approver", "bob")
    done = cli(*args, "--required", "2", "--no-interactive")
    assert done.exit_code == 0, done.output
    out = done.stdout
    assert "TRL / HF Trainer: 3 checkpoint(s), 3 complete, one every 50 steps" in out
    assert "checkpoints: 3 (3 complete), 3 on every_n_steps=50" in out and "doctor: " in out and " 0 fail" in out
    lab = tmp_path / "lab"
    config = lab / "shipyard.yaml"
    text = config.read_text()
    assert "profile" not in text and "DECIDE: take only steps" in text

    settings = json.loads(cli("config", "-c", str(config), "--json").stdout)
    assert Path(settings["watch"]["source"]).resolve() == run and settings["watch"]["every_n_steps"] == 50
    assert settings["release"] == {**settings["release"], "store": str(lab / "releases"), "line": "grpo-run"}
    assert settings["pipeline"]["recipe"] == str(lab / "recipes" / "default.yaml")
    doctor = {c["name"]: c["status"] for c in json.loads(cli("doctor", "-c", str(config), "--json").stdout)}
    assert doctor["recipe"] == doctor["gate policy"] == doctor["screening"] == doctor["policy"] == "ok", doctor

    policy = json.loads(cli("policy", "show", "-c", str(config), "--json").stdout)
    assert set(policy["approvers"]) == {"alice", "bob"} and policy["channels"]["stable"]["required"] == 2
    assert policy["owners"] == settings["trust"]["owners"] and len(policy["gate"]) == 1
    assert set(policy["doors"]) == {"dashboard", "prefect-ui"}
    assert settings["trust"]["key"] == str(lab / "keys" / "alice.key")
    for secret in [*(lab / "keys").glob("*.key"), lab / "keys" / "release.key", *(lab / "tokens").iterdir()]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret

    from shipyard.app.dashboard.auth import hash_token

    token = (lab / "tokens" / "bob.token").read_text().strip()
    assert settings["dashboard"]["tokens"]["bob"] == hash_token(token)

    listed = json.loads(cli("checkpoints", "-c", str(config), "--validate", "--json").stdout)
    assert [(c["step"], c["state"]) for c in listed] == [(50, "complete"), (100, "complete"), (150, "complete")]

    before = {p: p.read_bytes() for p in lab.rglob("*") if p.is_file()}
    again = cli(*args, "--no-interactive")
    assert again.exit_code == 2 and "refusing to overwrite" in again.stderr and "shipyard.yaml" in again.stderr
    assert {p: p.read_bytes() for p in lab.rglob("*") if p.is_file()} == before
    elsewhere = cli(
        "init", "--source", str(run), "--dir", "other", "--store", str(lab / "releases"), "--no-interactive"
    )
    assert elsewhere.exit_code == 2 and "already a release store" in elsewhere.stderr
    assert not (tmp_path / "other" / "shipyard.yaml").exists()


def test_every_field_a_user_must_decide_is_marked_in_the_copies(run: Path, tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    assert cli("init", "--source", str(run), "--dir", "lab", "--no-interactive").exit_code == 0
    lab = tmp_path / "lab"
    copies = {"recipe": [lab / "recipes/default.yaml"], "policy": [lab / "policies/default.yaml"]}
    copies["suite"] = [lab / f"suites/{name}.yaml" for name in ("capability", "safety", "screening")]
    for kind, files in copies.items():
        for path in files:
            data = YAML().load(path.read_text())
            for field, why in DECIDE[kind].items():
                *parents, name = field.split(".")
                sections = [data]
                for part in parents:
                    sections = [i for s in sections for i in (s[part[:-2]] if part.endswith("[]") else [s[part]])]
                for section in sections:
                    comment = section.ca.items[name][2] or section.ca.items[name][1][0]
                    assert f"DECIDE: {why}" in comment.value, (path, field)
    from shipyard.evals.gate_policy import load_gate_policy
    from shipyard.evals.suite import load_suite

    gate = load_gate_policy(lab / "policies/default.yaml")  # its suites name the copies, relative to it
    assert [Path(load_suite(ref).path).resolve() for ref in gate.suite_refs()] == copies["suite"][:2]


def test_init_asks_on_a_terminal_what_no_flag_gave(run: Path, tmp_path: Path) -> None:
    answers = "\n".join([str(run), "", "", "grpo", "alice, bob", "2"]) + "\n"
    done = cli("init", "--dir", "lab", "--interactive", stdin=answers)
    assert done.exit_code == 0, done.output
    for question in ("Your run", "Base model directory", "Release store", "Release line", "Approvers", "Approvals"):
        assert question in done.stdout
    settings = json.loads(cli("config", "-c", str(tmp_path / "lab/shipyard.yaml"), "--json").stdout)
    assert settings["release"]["line"] == "grpo" and set(settings["dashboard"]["tokens"]) == {"alice", "bob"}


def test_init_refuses_bad_answers_in_one_line_and_writes_nothing(run: Path, tmp_path: Path) -> None:
    cases = {
        ("--approver", "alice", "--required", "2"): "stable needs between 1 and 1 approvals",
        ("--approver", "carol=missing.pub"): "missing.pub: no such public key file",
        ("--approver", "al ice"): "a name is letters",
        ("--base-model", str(tmp_path)): "no config.json there",
        ("--line", "../up"): "a line's name",
    }
    for extra, message in cases.items():
        done = cli("init", "--source", str(run), "--dir", "lab", "--no-interactive", *extra)
        assert done.exit_code == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, extra
        assert not (tmp_path / "lab").exists()
    nothing = cli("init", "--no-interactive")
    assert nothing.exit_code == 2 and "no run: give --source" in nothing.stderr


def test_an_approver_with_a_key_of_their_own_keeps_the_private_half(run: Path, tmp_path: Path) -> None:
    from shipyard.registry.signing import fingerprint, keygen

    mine = keygen(tmp_path / "me" / "id_ed25519", "me@lab")
    done = cli("init", "--source", str(run), "--dir", "lab", "--approver", f"me={tmp_path}/me/id_ed25519.pub", "--json")
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)  # --json: only JSON on stdout, the lines for a person on stderr
    assert shown["framework"] == "TRL / HF Trainer" and shown["checkpoints"] == {"complete": 3}
    assert "run: " in done.stderr
    assert not (tmp_path / "lab" / "keys" / "me.key").exists()  # never copied, never made
    settings = json.loads(cli("config", "-c", str(tmp_path / "lab/shipyard.yaml"), "--json").stdout)
    assert settings["trust"]["key"] == str(tmp_path / "me" / "id_ed25519")
    policy = json.loads(cli("policy", "show", "-c", str(tmp_path / "lab/shipyard.yaml"), "--json").stdout)
    assert policy["approvers"]["me"] == [fingerprint(mine)]


def test_a_run_whose_checkpoints_hold_no_config_asks_for_the_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An HF Trainer run under FSDP (SHARDED_STATE_DICT), written by accelerate's own DCP call."""
    import torch.distributed.checkpoint as dist_cp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for step in (5, 10):
        ckpt = tmp_path / "fsdp-run" / f"checkpoint-{step}"
        writer = dist_cp.FileSystemWriter(str(ckpt / "pytorch_model_fsdp_0"))
        dist_cp.save({"model": model.state_dict()}, storage_writer=writer, planner=DefaultSavePlanner(), no_dist=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    bare = cli("init", "--source", str(tmp_path / "fsdp-run"), "--dir", "a", "--no-interactive")
    assert "under FSDP (SHARDED_STATE_DICT)" in bare.stdout
    assert "2 checkpoint(s) hold no config.json and the run has none: give --base-model" in bare.stdout
    args = ("--source", str(tmp_path / "fsdp-run"), "--base-model", str(tiny_model_dir), "--no-interactive")
    done = cli("init", "--dir", "b", *args)
    assert done.exit_code == 0 and "give --base-model" not in done.stdout, done.output
    listed = json.loads(cli("checkpoints", "-c", str(tmp_path / "b/shipyard.yaml"), "--validate", "--json").stdout)
    assert [c["state"] for c in listed] == ["complete", "complete"], listed


def test_init_on_an_s3_run_with_an_s3_store(s3_endpoint: str, run: Path, tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="lab-runs")
    for path in run.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "lab-runs", f"grpo/{path.relative_to(run).as_posix()}")
    env = {"SHIPYARD_S3__ENDPOINT_URL": s3_endpoint}
    args = ("--source", "s3://lab-runs/grpo", "--store", "s3://lab-runs/releases", "--no-interactive")
    done = cli("init", "--dir", "lab", *args, **env)
    assert done.exit_code == 0, done.output
    assert "TRL / HF Trainer: 3 checkpoint(s)" in done.stdout and "checkpoints: 3 (3 complete)" in done.stdout
    config = str(tmp_path / "lab/shipyard.yaml")
    assert json.loads(cli("policy", "show", "-c", config, "--json").stdout)["version"] == 1  # the endpoint kept
    again = cli("init", "--dir", "lab2", *args, **env)
    assert again.exit_code == 2 and "s3://lab-runs/releases: already a release store" in again.stderr


@pytest.mark.usefixtures("hub_online")
def test_init_on_a_hub_run(hub_server: HubServer, run: Path, tmp_path: Path) -> None:
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    hub_server.commit("lab/grpo", files)
    done = cli(
        "init", "--source", "hf://lab/grpo", "--dir", "lab", "--no-interactive", SHIPYARD_HUB__ENDPOINT=hub_server.url
    )
    assert done.exit_code == 0, done.output
    assert "TRL / HF Trainer: 3 checkpoint(s)" in done.stdout and "checkpoints: 3 (3 complete)" in done.stdout
    settings = json.loads(cli("config", "-c", str(tmp_path / "lab/shipyard.yaml"), "--json").stdout)
    assert settings["hub"]["endpoint"] == hub_server.url and settings["release"]["line"] == "grpo"
