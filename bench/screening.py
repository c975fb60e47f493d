"""Bench: what screening saves on a whole RL run, against the same run with screening off.

A demo RL run saves a checkpoint every 10 steps, plus one that collapsed (step 35: step 30's weights with noise in
one layer); every checkpoint is taken, in step order, through the pipeline
(`shipyard.orchestration.pipeline.release_checkpoint`, no Prefect), once with screening and once without, each in a
fresh home and store. Each release becomes the champion (`pipeline.champion_channel: candidate`, which every
release moves in a store without a policy), so each checkpoint is screened and gated against the release before
it, as an approved run would be. Reported for both: releases, post-training runs, total time, and screening's own
seconds; then each checkpoint screening turned away is post-trained and gated anyway against the champion it was
screened against, to say whether screening turned away a release.

Run: `.venv/bin/python bench/screening.py [--steps 60]` (about 15 minutes on 2 CPU cores at 60 steps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["SHIPYARD_PROFILE"] = "demo"

from shipyard.demo.rl_run import run_demo
from shipyard.intake.scan import scan
from shipyard.intake.sources import open_source
from shipyard.orchestration import pipeline
from shipyard.registry.stores import release_store
from shipyard.settings import DemoSettings, Settings


def settings_for(home: Path, screening: bool) -> Settings:
    return Settings(
        profile="demo",
        home=home,
        release={"store": str(home / "releases")},
        pipeline={"screening": screening, "champion_channel": "candidate"},
    )


def collapse(run: Path, step: int, into: int) -> None:
    """Add a checkpoint that collapsed: checkpoint-`step` with noise in one layer (held-out accuracy falls from
    about 0.5 to about 0.2), saved as checkpoint-`into`, as a run that diverged between saves would leave it."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    source, out = run / f"checkpoint-{step}", run / f"checkpoint-{into}"
    shutil.copytree(source, out)
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.down_proj.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.abs().max() * 0.5)
    model.save_pretrained(out)
    state = out / "trainer_state.json"
    if state.is_file():
        state.write_text(json.dumps(json.loads(state.read_text()) | {"global_step": into}))


def through(run: Path, home: Path, screening: bool) -> dict[str, Any]:
    settings = settings_for(home, screening)
    checkpoints = sorted(scan(open_source(str(run)), home / "snapshots"), key=lambda c: c.step)
    posttrained, turned_away = 0, []
    real = pipeline.make_candidate

    def counted(*args: Any, **kwargs: Any) -> Path:
        nonlocal posttrained
        posttrained += 1
        return real(*args, **kwargs)

    pipeline.make_candidate = counted  # type: ignore[assignment]
    started = time.perf_counter()
    try:
        for checkpoint in checkpoints:
            champion = pipeline.champion(settings, release_store(settings))
            outcome = pipeline.release_checkpoint(checkpoint, settings)
            print(f"  step {checkpoint.step}: {outcome.state} {outcome.reason[:150]}", flush=True)
            if outcome.state == "screened_out":
                turned_away.append((checkpoint, champion))
    finally:
        pipeline.make_candidate = real  # type: ignore[assignment]
    seconds = time.perf_counter() - started
    screen_seconds = pipeline.screening_budget(settings).seconds if screening else 0.0
    releases = len(pipeline.registry(settings).state().releases)
    return {
        "checkpoints": len(checkpoints),
        "releases": releases,
        "posttrained": posttrained,
        "seconds": seconds,
        "screen_seconds": screen_seconds,
        "turned_away": turned_away,
        "settings": settings,
    }


def would_have_passed(done: dict[str, Any]) -> list[tuple[int, bool]]:
    """Each turned-away checkpoint post-trained and gated anyway, against the champion it was screened against."""
    settings = done["settings"]
    verdicts = []
    for checkpoint, champion in done["turned_away"]:
        candidate = pipeline.make_candidate(checkpoint, settings)
        passed, _, _ = pipeline.gate_candidate(candidate, champion, checkpoint, settings)
        verdicts.append((checkpoint.step, passed))
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shipyard-bench-screening-"))
    try:
        run = tmp / "run"
        run_demo(DemoSettings(out=run, steps=args.steps, save_every=10), progress=False)
        collapse(run, 30, 35)  # one checkpoint worth turning away
        results = {}
        for label, screening in (("off", False), ("on", True)):
            print(f"screening {label}:", flush=True)
            results[label] = through(run, tmp / f"home-{label}", screening)
        verdicts = would_have_passed(results["on"])
        print()
        print("| screening | checkpoints | releases | post-training runs | total s | screening s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, r in results.items():
            print(
                f"| {label} | {r['checkpoints']} | {r['releases']} | {r['posttrained']} | {r['seconds']:.0f} |"
                f" {r['screen_seconds']:.0f} |"
            )
        said = ", ".join(f"step {s}: {'passed' if p else 'failed'} the gate" for s, p in verdicts) or "none turned away"
        print(f"\nturned away by screening, post-trained and gated anyway: {said}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
