"""The pages: releases and channels with their plots, one release's evidence and card, the checkpoint stream."""

from __future__ import annotations

from typing import Annotated, Any

import nh3
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from shipyard.app.dashboard import views
from shipyard.app.dashboard.context import Dashboard, dashboard
from shipyard.app.dashboard.plots import line_chart
from shipyard.registry import moves
from shipyard.registry.card import model_card
from shipyard.registry.evidence import evidence
from shipyard.registry.publish import manifest, resolve

RL_SIGNALS = ("reward", "heldout_accuracy")  # trainer metrics of the checkpoints, plotted against step

router = APIRouter()
Board = Annotated[Dashboard, Depends(dashboard)]


@router.get("/", response_class=HTMLResponse)
def index(request: Request, board: Board) -> HTMLResponse:
    line = board.line
    state, events = views.read(board.registry, board.settings)
    rows = views.releases(board.store, state, line, board.settings.approval.channel)
    markers = [(float(r["step"]), _label(r)) for r in rows if r["step"] is not None]
    by_suite = views.scores_by_suite(board.store, state, line)
    for row in rows:
        row["waiting_run"] = _waiting_run(line, row["version"]) if row["pending"] else None
    return board.page(
        request,
        "index.html",
        "releases",
        channels=views.channels(state, events, line),
        history=views.channel_history(state, events, line),
        releases=rows,
        rl_plot=line_chart(views.rl_by_step(events, line, RL_SIGNALS), markers, "the RL run: train signals by step"),
        suite_plots=[
            line_chart(series, markers, f"suite {suite}: scores of each release by RL step")
            for suite, series in sorted(by_suite.items())
        ]
        or [line_chart({}, [], "eval scores of each release")],
    )


@router.get("/releases/{version}", response_class=HTMLResponse)
def release(request: Request, version: int, board: Board) -> HTMLResponse:
    line, store = board.line, board.store
    state, _ = views.read(board.registry, board.settings)
    body = manifest(store, resolve(state, line, str(version)))
    channel = board.settings.approval.channel
    pending = views.is_pending(state, line, version, channel)
    previous = state.releases.get((line, version - 1))
    lineage = body.get("lineage") or {}
    return board.page(
        request,
        "release.html",
        f"v{version}",
        version=version,
        store=store.uri,
        channel=channel,
        pending=pending,
        waiting=moves.waiting(state, line, channel, version) if pending else "",
        heads=[c for (n, c), h in sorted(state.channels.items()) if n == line and h and h[-1] == version],
        approvals=[
            f"{a.get('by')} {a['type']} ({a.get('door')})"
            + ("" if a["counts"] else " — before the policy, not counted")
            for a in state.approvals.get((line, version), [])
        ],
        evidence=nh3.clean(board.markdown.render(evidence(store, line, version, board.settings.approval.channel))),
        flips=(body.get("gate") or {}).get("flips", []),
        lineage=[(k, lineage[k]) for k in sorted(lineage) if k not in ("recipe", "files", "stages")],
        card=model_card(line, version, body, manifest(store, previous) if previous else None),
    )


@router.get("/stream", response_class=HTMLResponse)
def stream(request: Request, board: Board) -> HTMLResponse:
    _, events = views.read(board.registry, board.settings)
    rows, screening = views.stream(events, board.line), views.screening(events, board.line)
    return board.page(request, "stream.html", "checkpoint stream", rows=rows, screening=screening)


def _label(row: dict[str, Any]) -> str:
    """A release's mark on the plots: its version, and the channels it heads but `candidate` (`v2 stable`)."""
    return " ".join([f"v{row['version']}", *(head for head in row["heads"] if head != "candidate")])


def _waiting_run(line: str, version: int) -> str | None:
    """The name of the Prefect approval run waiting for this release, when a Prefect server is configured."""
    from shipyard.orchestration.prefect import api_configured, waiting_approval

    if not api_configured():
        return None
    run = waiting_approval(line, version)
    return run.name if run else None
