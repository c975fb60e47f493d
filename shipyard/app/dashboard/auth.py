"""Dashboard logins: per-approver tokens kept as sha256 hashes, signed session cookies, CSRF tokens.

A session cookie is `[name, expiry, session id]` signed by itsdangerous; the
CSRF token of a session is itsdangerous' signature of the cookie under another
salt, so a form posted from another site (which cannot read the cookie) cannot
carry it. Both are keyed by `dashboard.secret`
(random per process when unset: logins then end with the process). Signing
out revokes the session id (kept under `<home>/dashboard/revoked`, so a
restart does not bring it back), and every request re-reads that file when it
changed, so a sign-out holds in every dashboard process that shares the home.
Failed logins are throttled per connecting address only (`client_address`:
`X-Forwarded-For` counts only from a configured trusted proxy), so one
person's failures never lock out another. Cookies are `Secure` over https.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from itsdangerous import BadSignature, Signer, URLSafeSerializer

from shipyard.registry.doors import hash_token
from shipyard.settings import DashboardSettings

COOKIE = "shipyard_session"
FAILURES_ALLOWED = 5  # failed logins per name or address within WINDOW before further tries are refused
WINDOW = 900.0


def new_token() -> tuple[str, str]:
    """A fresh login token and the hash to put in `dashboard.tokens`."""
    token = secrets.token_urlsafe(24)
    return token, hash_token(token)


class Auth:
    def __init__(self, settings: DashboardSettings, approvers: Callable[[], set[str]], home: Path) -> None:
        self.settings = settings
        self.approvers = approvers  # who this door may attest for now, read from the store's policy
        key = settings.secret.get_secret_value() if settings.secret else secrets.token_hex(32)
        self.cookies = URLSafeSerializer(key, salt="shipyard-session")
        self.csrf_signer = Signer(key, salt="shipyard-csrf")
        self.revoked_file = home / "dashboard" / "revoked"
        self._revoked: set[str] = set()
        self._revoked_seen: tuple[int, int] | None = None  # (size, mtime_ns) of the file when last read
        self.failures: dict[str, list[float]] = {}

    @property
    def revoked(self) -> set[str]:
        """Revoked session ids, re-read whenever another process (or this one) added to the file."""
        try:
            st = self.revoked_file.stat()
        except FileNotFoundError:
            return self._revoked
        if (st.st_size, st.st_mtime_ns) != self._revoked_seen:
            self._revoked = set(self.revoked_file.read_text().split())
            self._revoked_seen = (st.st_size, st.st_mtime_ns)
        return self._revoked

    def throttled(self, address: str, now: float | None = None) -> bool:
        """True if sign-ins from this address failed too often lately."""
        t = now or time.time()
        return len([f for f in self.failures.get(address, []) if t - f < WINDOW]) >= FAILURES_ALLOWED

    def failed(self, address: str, now: float | None = None) -> None:
        t = now or time.time()
        self.failures[address] = [f for f in self.failures.get(address, []) if t - f < WINDOW] + [t]

    def check_login(self, name: str, token: str) -> bool:
        """True if `name` is an approver with a configured token and `token` hashes to it."""
        stored = self.settings.tokens.get(name)
        return name in self.approvers() and stored is not None and hmac.compare_digest(stored, hash_token(token))

    def session(self, name: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + self.settings.session_hours * 3600)
        return self.cookies.dumps([name, expiry, secrets.token_hex(16)])

    def _opened(self, cookie: str | None) -> tuple[str, int, str] | None:
        """The cookie's (name, expiry, session id) if this dashboard signed it."""
        try:
            name, expiry, session_id = self.cookies.loads(cookie or "")
        except (BadSignature, ValueError, TypeError):
            return None
        typed = isinstance(name, str) and isinstance(expiry, int) and isinstance(session_id, str)
        return (name, expiry, session_id) if typed else None

    def who(self, cookie: str | None, now: float | None = None) -> str | None:
        """The approver a session cookie belongs to: genuine, unexpired, not revoked, and still an approver."""
        opened = self._opened(cookie)
        if opened is None:
            return None
        name, expiry, session_id = opened
        live = expiry > (now or time.time()) and session_id not in self.revoked
        return name if live and name in self.approvers() else None

    def revoke(self, cookie: str) -> None:
        if (opened := self._opened(cookie)) is None:
            return
        self._revoked.add(opened[2])
        self.revoked_file.parent.mkdir(parents=True, exist_ok=True)
        with self.revoked_file.open("a") as f:
            f.write(opened[2] + "\n")

    def csrf(self, cookie: str) -> str:
        return self.csrf_signer.get_signature(cookie).decode()

    def check_csrf(self, cookie: str | None, token: str) -> bool:
        return bool(cookie) and hmac.compare_digest(self.csrf(cookie or ""), token)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The address a request comes from: the connecting peer, or, only when that peer is a trusted proxy, the
    last address the proxy appended to `X-Forwarded-For` (the ones before it are the client's to write)."""
    if peer in trusted_proxies and forwarded_for:
        return forwarded_for.split(",")[-1].strip() or peer
    return peer


def secure(scheme: str, peer: str, forwarded_proto: str | None, trusted_proxies: list[str]) -> bool:
    """Whether the browser reached us over https (directly, or through a trusted proxy that says so)."""
    return scheme == "https" or (peer in trusted_proxies and (forwarded_proto or "").lower() == "https")
