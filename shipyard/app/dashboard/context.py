"""What every dashboard route shares: the settings, the store and its registry, sign-in, and page rendering.

One `Dashboard` per app, kept in `app.state` and handed to each route by `dashboard(request)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from shipyard.app.dashboard.auth import COOKIE, Auth, client_address, secure
from shipyard.registry.approvals import open_store_notice
from shipyard.registry.releases import Registry
from shipyard.registry.stores import Store
from shipyard.registry.trust import checked_state
from shipyard.settings import Settings

DOOR = "dashboard"
TEMPLATES = Path(__file__).parent / "templates"
FLASHES = {
    "signed-in": "Signed in.",
    "signed-out": "Signed out.",
    "bad-login": "Unknown approver or wrong token.",
    "throttled": "Too many failed sign-ins; wait a quarter of an hour.",
    "approved": "Approved.",
    "rejected": "Rejected.",
}


@dataclass
class Dashboard:
    settings: Settings
    store: Store
    registry: Registry = field(init=False)  # one for the app's life: pages read only new events
    auth: Auth = field(init=False)
    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES)))
    markdown: MarkdownIt = field(default_factory=lambda: MarkdownIt("commonmark", {"html": False}).enable("table"))

    def __post_init__(self) -> None:
        self.registry = Registry.of(self.store, self.settings)
        self.auth = Auth(self.settings.dashboard, self.attested, self.settings.home)

    @property
    def line(self) -> str:
        return self.settings.release.line

    def attested(self) -> set[str]:
        """Whom the store's policy lets this door attest for (no one without a policy)."""
        policy = checked_state(self.store, self.settings).policy
        door = policy.doors.get(DOOR) if policy else None
        return set(door.attests) if door else set()

    def peer_address(self, request: Request) -> str:
        peer = request.client.host if request.client else "?"
        return client_address(peer, request.headers.get("x-forwarded-for"), self.settings.dashboard.trusted_proxies)

    def over_https(self, request: Request) -> bool:
        peer = request.client.host if request.client else "?"
        proxies = self.settings.dashboard.trusted_proxies
        return secure(request.url.scheme, peer, request.headers.get("x-forwarded-proto"), proxies)

    def page(self, request: Request, name: str, title: str, **context: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE)
        user = self.auth.who(cookie)
        if user is None and not self.settings.dashboard.open_read and name != "login.html":
            raise HTTPException(303, headers={"Location": "/login"})
        csrf = self.auth.csrf(cookie) if user and cookie else ""
        flash = FLASHES.get(request.query_params.get("flash", ""), "")
        context |= {"title": title, "line": self.line, "user": user, "csrf": csrf, "flash": flash}
        # a banner on every page while the store has no policy; from the state this page read (no second read)
        ledger = self.registry.ledger
        context["open_store"] = open_store_notice(
            ledger.state if ledger.state.events else self.registry.state(), self.store.uri
        )
        return self.templates.TemplateResponse(request, name, context)

    async def signed_in(self, request: Request) -> tuple[str, dict[str, str]]:
        """The approver behind a state-changing request: a valid session and its CSRF token, or 403."""
        cookie = request.cookies.get(COOKIE)
        fields = await form(request)
        who = self.auth.who(cookie)
        if who is None:
            raise HTTPException(403, "sign in first")
        if not self.auth.check_csrf(cookie, fields.get("csrf", "")):
            raise HTTPException(403, "bad or missing CSRF token")
        return who, fields


def dashboard(request: Request) -> Dashboard:
    """The app's `Dashboard`, for a route's `Depends`."""
    found: Dashboard = request.app.state.dashboard
    return found


async def form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode(), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}
