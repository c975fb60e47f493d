"""Approving or rejecting a release: the signed-in approver's decision, signed with the dashboard door's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from shipyard.app.dashboard.context import DOOR, Dashboard, dashboard
from shipyard.events import Decision
from shipyard.orchestration.waking import decide_and_wake
from shipyard.registry.trust import door_signer

router = APIRouter()
Board = Annotated[Dashboard, Depends(dashboard)]


@router.post("/releases/{version}/{decision}")
async def post_decision(request: Request, version: int, decision: str, board: Board) -> Response:
    if decision not in Decision.__members__.values():
        raise HTTPException(404, f"no decision '{decision}': approve or reject")
    who, fields = await board.signed_in(request)
    chosen, settings = Decision(decision), board.settings
    signer = door_signer(settings, DOOR, who)
    decide_and_wake(settings, board.store, board.line, version, chosen, signer, fields.get("note", ""))
    return RedirectResponse(f"/?flash={'approved' if chosen == Decision.APPROVE else 'rejected'}", status_code=303)
