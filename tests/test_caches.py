"""Cache budgets: what gc evicts, what it keeps, and that the watcher's caches stay within them."""

import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from shipyard.app.cli.main import app
from shipyard.caches import Entry, collect, plan, working
from shipyard.digests import directory_digest
from shipyard.intake.selection import in_flight_digests, load_state, poll, save_state
from shipyard.intake.sources import open_source
from shipyard.settings import CacheSettings, WatchSettings

from .helpers import make_checkpoint

TIGHT = CacheSettings(snapshots=1, keep_recent_seconds=0)


def entry(name: str, used: float, inodes: dict[int, int], pinned: str = "") -> Entry:
    return Entry("snapshots", Path(name), used, inodes, pinned)


def test_plan_evicts_least_recently_used_first_and_counts_a_shared_file_once() -> None:
    old, mid, new = entry("old", 1, {1: 100, 9: 50}), entry("mid", 2, {2: 100, 9: 50}), entry("new", 3, {3: 100})
    usage = plan("snapshots", [new, old, mid], budget=260)
    assert usage.before == 350  # inode 9 is held by two entries and counted once
    assert [e.path.name for e in usage.evicted] == ["old"]  # freed 100: inode 9 is still held by "mid"
    assert usage.after == 250


def test_plan_keeps_pinned_entries_even_over_budget() -> None:
    busy, idle = entry("busy", 1, {1: 100}, pinned="in use by an in-flight checkpoint"), entry("idle", 2, {2: 100})
    usage = plan("snapshots", [busy, idle], budget=0)
    assert [e.path.name for e in usage.evicted] == ["idle"]
    assert usage.after == 100 and usage.pinned == 1


def _three_snapshots(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, dict[int, str]]:
    run, home = tmp_path / "run", tmp_path / "home"
    for step in (10, 20, 30):
        make_checkpoint(run, step, tiny_model_dir)
    policy = WatchSettings(newest_first=False, max_in_flight=3)
    _, state = poll(open_source(str(run)), home, policy, now=0)
    return home, {c.step: c.path for c in state.decided.values()}


def test_gc_evicts_finished_snapshots_keeps_the_in_flight_one_whole_and_drops_orphan_blobs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    home, paths = _three_snapshots(tiny_model_dir, tmp_path)
    in_flight = {Path(paths[30]).name}
    [snapshots, *_] = collect(home, TIGHT, in_flight, now=time.time())
    assert {e.path.name for e in snapshots.evicted} == {Path(paths[10]).name, Path(paths[20]).name}
    assert not Path(paths[10]).exists() and directory_digest(Path(paths[30])) == Path(paths[30]).name
    blobs = list((home / "snapshots" / "blobs" / "sha256").iterdir())
    assert blobs and all(b.stat().st_nlink >= 2 for b in blobs)  # every blob left is linked by the kept snapshot
    assert snapshots.after > snapshots.budget  # over budget, and said so: what is left is in use


def test_in_flight_digests_come_from_every_source_s_decision_log(tiny_model_dir: Path, tmp_path: Path) -> None:
    home, paths = _three_snapshots(tiny_model_dir, tmp_path)
    assert in_flight_digests(home / "watch") == {Path(p).name for p in paths.values()}


def test_work_being_written_and_recent_use_are_never_evicted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "candidates" / "finished").mkdir(parents=True)
    (home / "candidates" / "finished" / "model.safetensors").write_bytes(b"x" * 10_000)
    os.utime(home / "candidates" / "finished", (0, 0))
    with working(home / "candidates") as work:
        (work / "model.safetensors").write_bytes(b"y" * 10_000)
        os.utime(work, (0, 0))  # a long training run: its directory looks old
        usages = collect(home, CacheSettings(candidates=1, keep_recent_seconds=3600), set(), now=time.time())
        assert work.is_dir()
    [candidates] = [u for u in usages if u.cache == "candidates"]
    assert [e.path.name for e in candidates.evicted] == ["finished"]
    assert not (home / "candidates" / "finished").exists()


def test_gc_dry_run_names_what_would_go_and_deletes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    home, paths = _three_snapshots(tiny_model_dir, tmp_path)
    state = load_state(home / "watch", open_source(str(tmp_path / "run")).uri)
    state.finish(next(uri for uri, c in state.decided.items() if c.step == 10), "released")
    save_state(home / "watch", state, list(state.decided.values()), now=1)
    env = {"SHIPYARD_HOME": str(home), "SHIPYARD_CACHE__SNAPSHOTS": "1", "SHIPYARD_CACHE__KEEP_RECENT_SECONDS": "0"}
    result = CliRunner().invoke(app, ["gc", "--dry-run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    [snapshots] = [u for u in json.loads(result.stdout) if u["cache"] == "snapshots"]
    assert snapshots["evicted"] == [paths[10]] and snapshots["over_budget"]  # 20 and 30 are still in flight
    assert all(Path(p).is_dir() for p in paths.values())


def test_a_torn_decision_log_does_not_stop_gc(tmp_path: Path) -> None:
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "0123456789abcdef.jsonl").write_text('{"schema_version": 1, "at": 1, "checkp')
    assert in_flight_digests(tmp_path / "watch") == set()
