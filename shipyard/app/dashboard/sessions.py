"""Signing in and out: a login form with its own CSRF nonce, throttled failures, a session cookie."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shipyard.app.dashboard.auth import COOKIE
from shipyard.app.dashboard.context import Dashboard, dashboard, form

LOGIN_COOKIE = "shipyard_login"

router = APIRouter()
Board = Annotated[Dashboard, Depends(dashboard)]


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, board: Board) -> HTMLResponse:
    nonce = secrets.token_hex(16)
    response = board.page(request, "login.html", "sign in", login_csrf=board.auth.csrf(nonce))
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=board.over_https(request))
    return response


@router.post("/login")
async def login(request: Request, board: Board) -> Response:
    auth, fields = board.auth, await form(request)
    if not auth.check_csrf(request.cookies.get(LOGIN_COOKIE), fields.get("csrf", "")):
        raise HTTPException(403, "bad or missing CSRF token")
    name, address = fields.get("name", ""), board.peer_address(request)
    if auth.throttled(address):
        return RedirectResponse("/login?flash=throttled", status_code=303)
    if not auth.check_login(name, fields.get("token", "")):
        auth.failed(address)
        return RedirectResponse("/login?flash=bad-login", status_code=303)
    response = RedirectResponse("/?flash=signed-in", status_code=303)
    response.set_cookie(COOKIE, auth.session(name), httponly=True, samesite="strict", secure=board.over_https(request))
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, board: Board) -> Response:
    await board.signed_in(request)
    board.auth.revoke(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/?flash=signed-out", status_code=303)
    response.delete_cookie(COOKIE)
    return response
