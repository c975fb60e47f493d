"""Helpers shared by tests: checkpoints written the way transformers writes them."""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM


def make_checkpoint(run: Path, step: int, model_dir: Path, **save: object) -> Path:
    ckpt = run / f"checkpoint-{step}"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.save_pretrained(ckpt, **save)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # as a trainer saves them
        shutil.copy(model_dir / name, ckpt)
    (ckpt / "optimizer.pt").write_bytes(b"not weights, never read")
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": step, "reward": step / 100}]}))
    return ckpt


class Keys:
    """Signing keys made on demand under one directory: owners, approvers and doors of a test store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        from shipyard.registry.signing import keygen

        path = self.directory / f"{name}.key"
        if not path.exists():
            keygen(path, name)
        return path

    def public(self, name: str) -> str:
        self.path(name)
        return (self.directory / f"{name}.key.pub").read_text().strip()

    def fingerprint(self, name: str) -> str:
        from shipyard.registry.signing import fingerprint

        return fingerprint(self.public(name))

    def ec(self, name: str) -> Path:
        """A release-signing EC key (its public PEM beside it, `.pub`)."""
        from shipyard.registry.attest import keygen_ec

        path = self.directory / f"{name}.pem"
        if not path.exists():
            keygen_ec(path)
        return path

    def signer(self, who: str, door: str = "cli", key: str | None = None) -> Any:
        """`who` deciding with their own key, or (with `door`'s key named in `key`) attested by a door."""
        from shipyard.registry.approvals import Signer
        from shipyard.registry.signing import load_private

        return Signer(who, load_private(self.path(key or who)), door)


def pin(monkeypatch: Any, keys: Keys) -> None:
    """Pin `keys`' owner in this test's reader settings (the environment), as `shipyard trust pin` would."""
    monkeypatch.setenv("SHIPYARD_TRUST__OWNERS", json.dumps([keys.fingerprint("owner")]))


PIPELINE = Keys(Path(tempfile.mkdtemp(prefix="shipyard-tests-pipeline-")))  # the tests' gate-signing pipeline


def protect(store: Any, keys: Keys, approvers: tuple[str, ...] = ("ana", "bo"), **rules: Any) -> Any:
    """Sign a policy into `store`, owned by `keys`' owner: these approvers with their keys, `rules` on top."""
    from shipyard.registry.approval_policy import ApprovalPolicy
    from shipyard.registry.trust import set_policy

    policy = ApprovalPolicy(
        owners=[keys.public("owner")],
        approvers={who: [keys.public(who)] for who in approvers},
        **({"gate": [PIPELINE.public("gate")]} | rules),
    )
    set_policy(store, policy, [keys.path("owner")])
    return policy


def gated(directory: Path, copy_of: Path | None = None, signed: bool = True, **decision: Any) -> Path:
    """`directory` (a copy of `copy_of`, if given) with a passing gate decision naming its digest, signed by the
    tests' pipeline key (the gate key `protect` names) unless not `signed`."""
    from shipyard.registry.approval_policy import sign_gate
    from shipyard.registry.publish import model_digest
    from shipyard.registry.signing import load_private

    if copy_of is not None:
        shutil.copytree(copy_of, directory)
    gate = {"passed": True, "checks": [], **decision} | {"candidate_digest": model_digest(directory)}
    if signed:
        gate = sign_gate(gate, load_private(PIPELINE.path("gate")), "checkpoint-digest")
    (directory / "gate.json").write_text(json.dumps(gate))
    return directory


def candidate(directory: Path, weights: bytes = b"weights", signed: bool = True, **decision: Any) -> Path:
    """A small candidate directory (config and weights bytes) with a passing gate decision (`gated`)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(weights)
    return gated(directory, signed=signed, **decision)
