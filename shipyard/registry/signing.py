"""Ed25519 keys and signatures over JSON payloads: who signed a policy or a decision.

Keys are OpenSSH keys, so a person can use the `ssh-keygen -t ed25519` key
they already have (`~/.ssh/id_ed25519`) or one made by `shipyard keygen`.
Public keys travel as OpenSSH lines (`ssh-ed25519 AAAA… comment`) and are
named by the fingerprint `ssh-keygen -lf` prints (`SHA256:…`), so a person
can compare them by eye. A signature covers the canonical JSON of a payload
prefixed with its purpose (`shipyard:<purpose>`), so a signature made for one
kind of statement can never be replayed as another. Built on `cryptography`
directly: TUF's metadata model (four roles, expiring files, a repository
layout) does not fit one event in a hash-chained log, and securesystemslib
would only wrap these same calls. Called by the policy and the doors.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shipyard.errors import ConfigError

KEY_TYPE = "ssh-ed25519"


def keygen(path: Path, comment: str) -> str:
    """Write a new private key to `path` (mode 600, never overwritten) and `path`.pub; the public line."""
    if path.exists():
        raise ConfigError(f"{path}: exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(pem)
    line = f"{public_line(key.public_key())} {comment}".strip()
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return line


def load_private(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an OpenSSH or PEM file; asks for a passphrase on a terminal if it has one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signing key ({exc.strerror})") from None
    if data.lstrip().startswith((b"ssh-", b"ecdsa-", b"-----BEGIN PUBLIC KEY")):
        raise ConfigError(f"{path}: a public key; give the private key it belongs to (the file without .pub)")
    try:
        key = _load(data, None)
    except TypeError:  # encrypted
        if not sys.stdin.isatty():
            raise ConfigError(f"{path}: the key has a passphrase; run on a terminal to enter it") from None
        key = _load(data, getpass.getpass(f"passphrase for {path}: ").encode())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: a {type(key).__name__}; Shipyard signs with Ed25519 keys (ssh-keygen -t ed25519)")
    return key


def _load(data: bytes, password: bytes | None) -> Any:
    if data.lstrip().startswith(b"-----BEGIN OPENSSH"):
        return serialization.load_ssh_private_key(data, password)
    return serialization.load_pem_private_key(data, password)


def public_line(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@lru_cache(maxsize=4096)
def parse_public(line: str) -> Ed25519PublicKey:
    """`ssh-ed25519 AAAA… [comment]` as a key; ConfigError naming what is wrong."""
    parts = line.split()
    if len(parts) < 2 or parts[0] != KEY_TYPE:
        raise ConfigError(f"{line[:40]!r}: expected an OpenSSH public key line 'ssh-ed25519 AAAA… [comment]'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except ValueError as exc:
        raise ConfigError(f"{line[:40]!r}: not a valid public key ({exc})") from None
    assert isinstance(key, Ed25519PublicKey)
    return key


@lru_cache(maxsize=4096)
def fingerprint(line: str) -> str:
    """The `SHA256:…` fingerprint `ssh-keygen -lf` prints for this public key."""
    blob = base64.b64decode(public_line(parse_public(line)).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def message(purpose: str, payload: dict[str, Any]) -> bytes:
    return f"shipyard:{purpose}\n".encode() + json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, purpose: str, payload: dict[str, Any]) -> dict[str, str]:
    """`{"key": <public line>, "sig": <base64>}` over `payload` for `purpose`."""
    signature = key.sign(message(purpose, payload))
    return {"key": public_line(key.public_key()), "sig": base64.b64encode(signature).decode()}


def valid(signature: Any, purpose: str, payload: dict[str, Any]) -> bool:
    """True if `signature` (as `sign` returns it) is a good signature of `payload` for `purpose` by its key."""
    if not isinstance(signature, dict) or not isinstance(signature.get("sig"), str):
        return False
    try:
        key = parse_public(str(signature.get("key", "")))
        key.verify(base64.b64decode(signature["sig"], validate=True), message(purpose, payload))
    except (ConfigError, InvalidSignature, ValueError):
        return False
    return True
