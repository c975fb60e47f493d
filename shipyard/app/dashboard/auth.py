"""Dashboard logins: per-approver tokens kept as sha256 hashes, signed session cookies, CSRF tokens.

A session cookie is `[name, expiry, session id]` signed by itsdangerous; the
CSRF token of a session is itsdangerous' signature of the cookie under another
salt, so a form posted from another site (which cannot read the cookie) cannot
carry it. Both are keyed by `dashboard.secret`
(random per process when unset: logins then end with the process). Signing
out revokes the session id (kept under `<home>/dashboard/revoked`, so a
restart does not bring it back). Failed logins are throttled per name and
per client address.
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
        self.revoked = set(self.revoked_file.read_text().split()) if self.revoked_file.is_file() else set()
        self.failures: dict[str, list[float]] = {}

    def throttled(self, *who: str, now: float | None = None) -> bool:
        """True if any of these (a name, an address) failed too often lately."""
        t = now or time.time()
        return any(len([f for f in self.failures.get(w, []) if t - f < WINDOW]) >= FAILURES_ALLOWED for w in who)

    def failed(self, *who: str, now: float | None = None) -> None:
        t = now or time.time()
        for w in who:
            self.failures[w] = [f for f in self.failures.get(w, []) if t - f < WINDOW] + [t]

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
        self.revoked.add(opened[2])
        self.revoked_file.parent.mkdir(parents=True, exist_ok=True)
        with self.revoked_file.open("a") as f:
            f.write(opened[2] + "\n")

    def csrf(self, cookie: str) -> str:
        return self.csrf_signer.get_signature(cookie).decode()

    def check_csrf(self, cookie: str | None, token: str) -> bool:
        return bool(cookie) and hmac.compare_digest(self.csrf(cookie or ""), token)
