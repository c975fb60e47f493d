"""The dashboard app: its routers (pages, sessions, decisions), security headers and error pages.

Safe to open: every string from the store is escaped by Jinja; the only HTML
inserted as is comes from markdown rendered with raw HTML off and then
sanitized by `nh3`, and from the SVG plots (their text escaped). A strict
Content-Security-Policy allows no script at all and styles only from
`/style.css`; flash messages come from a fixed set. Decisions are signed with
the dashboard door's key (`trust.door_keys.dashboard`) for the person who
signed in, and the store's policy must let this door attest for them. Each
request reads the events written since the last.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from html import escape

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shipyard.app.dashboard import decisions, pages, sessions
from shipyard.app.dashboard.context import TEMPLATES, Dashboard
from shipyard.errors import ShipyardError
from shipyard.registry.stores import Store
from shipyard.settings import Settings

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
TITLES = {400: "Bad request", 403: "Refused", 404: "Not found", 409: "Conflict", 503: "Unavailable"}


def create_app(settings: Settings, store: Store) -> FastAPI:
    app = FastAPI(title="Shipyard releases", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = Dashboard(settings, store)
    style = (TEMPLATES / "style.css").read_text()

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

    for router in (pages.router, sessions.router, decisions.router):
        app.include_router(router)
    return app


def error_page(status: int, message: str, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """An error as a small HTML page with its status: 400, 403, 404, 409 from the error tree's groups."""
    title = TITLES.get(status, "Error")
    body = (
        f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{escape(message)}</p><p><a href='/'>releases</a></p>"
    )
    return HTMLResponse(body, status_code=status, headers=headers)
