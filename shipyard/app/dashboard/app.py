"""The dashboard's routes. Each request reads the events written since the last; approvals go through the doors.

Safe to open: every string from the store is escaped by Jinja; the only HTML
inserted as is comes from markdown rendered with raw HTML off and then
sanitized by `nh3`, and from the SVG plots (their text escaped). A strict
Content-Security-Policy allows no script at all and styles only from
`/style.css`; flash messages come from a fixed set. Decisions are signed with
the dashboard door's key (`trust.door_keys.dashboard`) for the person who
signed in, and the store's policy must let this door attest for them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import nh3
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from starlette.exceptions import HTTPException as StarletteHTTPException

from shipyard.app.dashboard import views
from shipyard.app.dashboard.auth import COOKIE, Auth, client_address, secure
from shipyard.app.dashboard.plots import line_chart
from shipyard.errors import ShipyardError
from shipyard.events import Decision
from shipyard.orchestration.waking import decide_and_wake
from shipyard.registry.approvals import open_store_notice
from shipyard.registry.card import model_card
from shipyard.registry.evidence import evidence
from shipyard.registry.publish import manifest, resolve
from shipyard.registry.releases import Registry
from shipyard.registry.stores import Store
from shipyard.registry.trust import checked_state, door_signer
from shipyard.settings import Settings

DOOR = "dashboard"
LOGIN_COOKIE = "shipyard_login"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
FLASHES = {
    "signed-in": "Signed in.",
    "signed-out": "Signed out.",
    "bad-login": "Unknown approver or wrong token.",
    "throttled": "Too many failed sign-ins; wait a quarter of an hour.",
    "approved": "Approved.",
    "rejected": "Rejected.",
}
SAFETY = ("refusal",)  # metrics plotted on the safety chart
RL_SIGNALS = ("reward", "heldout_accuracy")  # trainer metrics of the checkpoints, plotted against step


def create_app(settings: Settings, store: Store) -> FastAPI:
    app = FastAPI(title="Shipyard releases", docs_url=None, redoc_url=None, openapi_url=None)
    registry = Registry.of(store, settings)  # one for the app's life: pages read only new events
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    line, rules = settings.release.line, settings.approval
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    style = (Path(__file__).parent / "templates" / "style.css").read_text()

    def attested() -> set[str]:
        """Whom the store's policy lets this door attest for (no one without a policy)."""
        policy = checked_state(store, settings).policy
        door = policy.doors.get(DOOR) if policy else None
        return set(door.attests) if door else set()

    auth = Auth(settings.dashboard, attested, settings.home)
    proxies = settings.dashboard.trusted_proxies

    def peer_address(request: Request) -> str:
        peer = request.client.host if request.client else "?"
        return client_address(peer, request.headers.get("x-forwarded-for"), proxies)

    def over_https(request: Request) -> bool:
        peer = request.client.host if request.client else "?"
        return secure(request.url.scheme, peer, request.headers.get("x-forwarded-proto"), proxies)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(ShipyardError)
    async def shipyard_error(_: Request, exc: ShipyardError) -> Response:
        return error_page(exc.http_status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_page(exc.status_code, str(exc.detail), exc.headers)

    @app.get("/style.css")
    def stylesheet() -> Response:
        return Response(style, media_type="text/css")

    def page(request: Request, name: str, title: str, **context: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE)
        user = auth.who(cookie)
        if user is None and not settings.dashboard.open_read and name != "login.html":
            raise HTTPException(303, headers={"Location": "/login"})
        csrf = auth.csrf(cookie) if user and cookie else ""
        flash = FLASHES.get(request.query_params.get("flash", ""), "")
        context |= {"title": title, "line": line, "user": user, "csrf": csrf, "flash": flash}
        # a banner on every page while the store has no policy; from the state this page read (no second read)
        read = registry.ledger.state if registry.ledger.state.events else registry.state()
        context["open_store"] = open_store_notice(read, store.uri)
        return templates.TemplateResponse(request, name, context)

    async def form(request: Request) -> dict[str, str]:
        fields = parse_qs((await request.body()).decode(), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}

    async def signed_in(request: Request) -> tuple[str, dict[str, str]]:
        """The approver behind a state-changing request: a valid session and its CSRF token, or 403."""
        cookie = request.cookies.get(COOKIE)
        fields = await form(request)
        who = auth.who(cookie)
        if who is None:
            raise HTTPException(403, "sign in first")
        if not auth.check_csrf(cookie, fields.get("csrf", "")):
            raise HTTPException(403, "bad or missing CSRF token")
        return who, fields

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        state, events = views.read(registry, settings)
        rows = views.releases(store, state, line, rules.channel)
        series = views.scores_by_step(store, state, line)
        markers = [(float(r["step"]), f"v{r['version']}") for r in rows if r["step"] is not None]
        capability = {k: v for k, v in series.items() if not k.endswith(SAFETY)}
        safety = {k: v for k, v in series.items() if k.endswith(SAFETY)}
        for row in rows:
            row["waiting_run"] = _waiting_run(line, row["version"]) if row["pending"] else None
        return page(
            request,
            "index.html",
            "releases",
            channels=views.channels(state, events, line),
            releases=rows,
            rl_plot=line_chart(
                views.rl_by_step(events, line, RL_SIGNALS), markers, "the RL run: train signals by step"
            ),
            scores_plot=line_chart(capability, markers, "eval scores of each release by RL step"),
            safety_plot=line_chart(safety, markers, "safety: refusal rates of each release"),
        )

    @app.get("/releases/{version}", response_class=HTMLResponse)
    def release(request: Request, version: int) -> HTMLResponse:
        state, _ = views.read(registry, settings)
        found = resolve(state, line, str(version))
        body = manifest(store, found)
        previous = state.releases.get((line, version - 1))
        lineage = body.get("lineage") or {}
        return page(
            request,
            "release.html",
            f"v{version}",
            version=version,
            store=store.uri,
            heads=[c for (n, c), h in sorted(state.channels.items()) if n == line and h and h[-1] == version],
            approvals=[
                f"{a.get('by')} {a['type']} ({a.get('door')})"
                + ("" if a["counts"] else " — before the policy, not counted")
                for a in state.approvals.get((line, version), [])
            ],
            evidence=nh3.clean(markdown.render(evidence(store, line, version, rules.channel))),
            flips=(body.get("gate") or {}).get("flips", []),
            lineage=[(k, lineage[k]) for k in sorted(lineage) if k not in ("recipe", "files", "stages")],
            card=model_card(line, version, body, manifest(store, previous) if previous else None),
        )

    @app.get("/stream", response_class=HTMLResponse)
    def stream(request: Request) -> HTMLResponse:
        _, events = views.read(registry, settings)
        return page(request, "stream.html", "checkpoint stream", rows=views.stream(events, line))

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        nonce = secrets.token_hex(16)
        response = page(request, "login.html", "sign in", login_csrf=auth.csrf(nonce))
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=over_https(request))
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        if not auth.check_csrf(request.cookies.get(LOGIN_COOKIE), fields.get("csrf", "")):
            raise HTTPException(403, "bad or missing CSRF token")
        name, address = fields.get("name", ""), peer_address(request)
        if auth.throttled(address):
            return RedirectResponse("/login?flash=throttled", status_code=303)
        if not auth.check_login(name, fields.get("token", "")):
            auth.failed(address)
            return RedirectResponse("/login?flash=bad-login", status_code=303)
        response = RedirectResponse("/?flash=signed-in", status_code=303)
        response.set_cookie(COOKIE, auth.session(name), httponly=True, samesite="strict", secure=over_https(request))
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await signed_in(request)
        auth.revoke(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/?flash=signed-out", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.post("/releases/{version}/{decision}")
    async def post_decision(request: Request, version: int, decision: str) -> Response:
        if decision not in Decision.__members__.values():
            raise HTTPException(404, f"no decision '{decision}': approve or reject")
        who, fields = await signed_in(request)
        chosen, signer = Decision(decision), door_signer(settings, DOOR, who)
        decide_and_wake(settings, store, line, version, chosen, signer, fields.get("note", ""))
        done = "approved" if chosen == Decision.APPROVE else "rejected"
        return RedirectResponse(f"/?flash={done}", status_code=303)

    return app


TITLES = {400: "Bad request", 403: "Refused", 404: "Not found", 409: "Conflict", 503: "Unavailable"}


def error_page(status: int, message: str, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """An error as a small HTML page with its status: 400, 403, 404, 409 from the error tree's groups."""
    title = TITLES.get(status, "Error")
    body = (
        f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{escape(message)}</p><p><a href='/'>releases</a></p>"
    )
    return HTMLResponse(body, status_code=status, headers=headers)


def _waiting_run(line: str, version: int) -> str | None:
    """The name of the Prefect approval run waiting for this release, when a Prefect server is configured."""
    from shipyard.orchestration.prefect import api_configured, waiting_approval

    if not api_configured():
        return None
    run = waiting_approval(line, version)
    return run.name if run else None
