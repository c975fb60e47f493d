"""What a consumer checks without Shipyard: an OpenSSF Model Signing bundle and in-toto provenance per release.

With a release key (`trust.release_key`: an EC key on a NIST curve, the only
kind Model Signing's key signer takes; `shipyard keygen --ec` makes one) the
publisher writes two attestations beside the release's files:

- `provenance.intoto.json`, a DSSE envelope around an in-toto Statement v1
  (SLSA provenance v1 predicate) whose subjects are the release's files and
  which links the RL run, step and checkpoint digest, the post-training
  lineage (recipe, stages), the candidate, the eval results and the gate
  verdict with the pipeline's signature;
- `model.sig`, a Model Signing bundle (DSSE, in-toto) over every file of the
  release and the provenance, made by `model_signing` itself.

Both travel in the manifest (`attestations`) and `pull` writes them, so
`model_signing verify key DIR --signature DIR/model.sig --public_key KEY`
checks a pulled release with the public key the store's policy names
(`release_keys`). The approvals come after publishing and live in the
ledger: `shipyard pull --verify` checks both attestations with the policy's
keys and the ledger path to the release (`verify_pulled`). Called by the
publisher and `pull --verify`; imports Model Signing only when used.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shipyard.errors import ConfigError, TrustError

SIGNATURE = "model.sig"
PROVENANCE = "provenance.intoto.json"
ATTESTATIONS = (SIGNATURE, PROVENANCE)
STATEMENT = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SLSA = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://shipyard.dev/release/v1"  # what a Shipyard release is built by: post-training, evals, gate
CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def keygen_ec(path: Path) -> str:
    """Write a new P-256 private key (PEM, mode 600, never overwritten) and its public half to `path`.pub."""
    if path.exists():
        raise ConfigError(f"{path}: exists; refusing to overwrite a key")
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = public_pem(key.public_key())
    path.with_name(path.name + ".pub").write_text(public)
    return public


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def parse_release_key(text: str) -> ec.EllipticCurvePublicKey:
    """A release-signing public key (PEM) as Model Signing takes it; ConfigError naming what is wrong."""
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError:
        raise ConfigError("a release key must be a PEM public key ('-----BEGIN PUBLIC KEY-----')") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, CURVES):
        raise ConfigError("a release key must be an EC key on P-256, P-384 or P-521 (Model Signing's key signer)")
    return key


def statement(files: dict[str, str], manifest: dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement of a release: its files as subjects, how it was made as the predicate."""
    lineage = manifest.get("lineage") or {}
    gate = manifest.get("gate") or {}
    checkpoint = {"sha256": lineage["checkpoint_digest"]} if lineage.get("checkpoint_digest") else {}
    made_by = {
        k: lineage[k] for k in ("recipe", "recipe_digest", "data", "data_digests", "stages", "versions") if k in lineage
    }
    return {
        "_type": STATEMENT,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in sorted(files.items())],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "run": lineage.get("run"),
                    "step": lineage.get("step"),
                    "line": manifest["line"],
                },
                "internalParameters": made_by,
                "resolvedDependencies": [
                    {"name": "checkpoint", "uri": str(lineage.get("checkpoint_uri", "")), "digest": checkpoint}
                ],
            },
            "runDetails": {
                "builder": {"id": BUILD_TYPE},
                "byproducts": [
                    {"name": "candidate", "digest": {"sha256": manifest["candidate_digest"]}},
                    {"name": "evals", "content": _b64(manifest.get("evals") or {})},
                    {"name": "gate", "content": _b64({k: gate.get(k) for k in ("statement", "signature")})},
                ],
            },
        },
    }


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value, sort_keys=True).encode()).decode()


@contextmanager
def attested(
    files: dict[str, Path], digests: dict[str, str], manifest: dict[str, Any], key: Path
) -> Iterator[dict[str, Path]]:
    """Sign the release: the provenance envelope and the Model Signing bundle, made in a temporary directory
    (gone on exit); their paths.

    The release's files are hard-linked (copied where links fail) into that directory as they will be pulled,
    so the bundle covers exactly the files and names a consumer gets.
    """
    from model_signing import hashing, signing
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # re-exported, not in __all__

    private = _private(key)
    with _workspace(next(iter(files.values()))) as work:
        tree = Path(work) / "release"
        _link(files, tree)
        payload = json.dumps(statement(digests, manifest), sort_keys=True).encode()
        envelope = Envelope(payload, PAYLOAD_TYPE, {})
        envelope.sign(CryptoSigner(private))
        (tree / PROVENANCE).write_text(json.dumps(envelope.to_dict(), indent=1) + "\n")
        config = signing.Config().use_elliptic_key_signer(private_key=key)
        config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False))
        config.sign(tree, tree / SIGNATURE)
        yield {name: tree / name for name in ATTESTATIONS}


def _link(files: dict[str, Path], tree: Path) -> None:
    for name, path in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, tree / name)
        except OSError:
            shutil.copyfile(path, tree / name)


def _workspace(near: Path) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory beside the release's files, so they are linked, not copied (else the system's)."""
    try:
        return tempfile.TemporaryDirectory(prefix=".shipyard-attest-", dir=near.parent.parent)
    except OSError:  # a read-only place: the files will be copied
        return tempfile.TemporaryDirectory(prefix="shipyard-attest-")


def _private(key: Path) -> ec.EllipticCurvePrivateKey:
    try:
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: cannot read the release key ({type(exc).__name__})") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, CURVES):
        raise ConfigError(f"{key}: not an EC key on P-256/384/521 (make one with `shipyard keygen --ec`)")
    return loaded


def verify_pulled(out: Path, manifest: dict[str, Any], release_keys: list[str]) -> list[str]:
    """Check a pulled release's Model Signing bundle and provenance with the policy's release keys; what held."""
    if not release_keys:
        raise TrustError("the store's policy names no release key (release_keys): nothing to check the release with")
    if not all((out / name).is_file() for name in ATTESTATIONS):
        raise TrustError(
            f"{out}: the release carries no {SIGNATURE} and {PROVENANCE} (published without a release key)"
        )
    signer = _model_signing_key(out, release_keys)
    envelope = _provenance(out / PROVENANCE, release_keys)
    files = {name: meta["digest"] for name, meta in manifest["files"].items()}
    if envelope != statement(files, manifest):
        raise TrustError(f"{out / PROVENANCE}: the signed provenance differs from the release's manifest")
    return [f"{SIGNATURE}: every file checked by Model Signing, key {signer}", f"{PROVENANCE}: signed by key {signer}"]


def _model_signing_key(out: Path, release_keys: list[str]) -> str:
    from model_signing import hashing, verifying

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, pem in enumerate(release_keys):
            public = Path(tmp) / f"{number}.pub"
            public.write_text(pem)
            config = verifying.Config().use_elliptic_key_verifier(public_key=public)
            config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False))
            try:
                config.verify(out, out / SIGNATURE)
            except ValueError as exc:
                failures.append(str(exc).splitlines()[0][:300])
                continue
            return key_id(pem)
    raise TrustError(f"{out / SIGNATURE}: Model Signing refuses the release: {'; '.join(failures)}")


def _provenance(path: Path, release_keys: list[str]) -> dict[str, Any]:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import Key, SSlibKey  # type: ignore[attr-defined]  # re-exported, not in __all__

    try:
        envelope = Envelope.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustError(f"{path}: not a DSSE envelope ({exc})") from None
    keys: list[Key] = [SSlibKey.from_crypto(parse_release_key(pem)) for pem in release_keys]
    try:
        envelope.verify(keys, 1)
    except VerificationError:
        raise TrustError(f"{path}: not signed by a release key of the store's policy") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise TrustError(f"{path}: payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE}")
    body: dict[str, Any] = json.loads(envelope.payload)
    return body


def key_id(pem: str) -> str:
    """A short name of a release key: sha256 of its DER form, as `openssl pkey -pubin -outform der | sha256sum`."""
    import hashlib

    der = parse_release_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]
