"""Dashboard logins: per-approver tokens kept as sha256 hashes, signed session cookies, CSRF tokens.

A session cookie is `<name>|<expiry>|<hmac>`; the CSRF token of a session is
an HMAC of the cookie, so a form posted from another site (which cannot read
the cookie) cannot carry it. Both are keyed by `dashboard.secret` (random per
process when unset: logins then end with the process).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from shipyard.settings import DashboardSettings

COOKIE = "shipyard_session"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh login token and the hash to put in `dashboard.tokens`."""
    token = secrets.token_urlsafe(24)
    return token, hash_token(token)


class Auth:
    def __init__(self, settings: DashboardSettings, approvers: list[str]) -> None:
        self.settings = settings
        self.approvers = approvers
        self.key = (settings.secret or secrets.token_hex(32)).encode()

    def check_login(self, name: str, token: str) -> bool:
        """True if `name` is an approver with a configured token and `token` hashes to it."""
        stored = self.settings.tokens.get(name)
        return name in self.approvers and stored is not None and hmac.compare_digest(stored, hash_token(token))

    def session(self, name: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + self.settings.session_hours * 3600)
        body = f"{name}|{expiry}"
        return f"{body}|{self._sign(body)}"

    def who(self, cookie: str | None, now: float | None = None) -> str | None:
        """The approver a session cookie belongs to, if it is genuine, unexpired and they are still an approver."""
        if not cookie or cookie.count("|") != 2:
            return None
        name, expiry, signature = cookie.split("|")
        genuine = hmac.compare_digest(signature, self._sign(f"{name}|{expiry}"))
        fresh = expiry.isdigit() and int(expiry) > (now or time.time())
        return name if genuine and fresh and name in self.approvers else None

    def csrf(self, cookie: str) -> str:
        return self._sign(f"csrf|{cookie}")

    def check_csrf(self, cookie: str | None, token: str) -> bool:
        return bool(cookie) and hmac.compare_digest(self.csrf(cookie or ""), token)

    def _sign(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
