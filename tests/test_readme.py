"""The README is a contract: its commands run as written, in order, in a scratch copy, and print what it shows."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .readme import Command, Expected, check, clean_env, matches, pages, parse, scratch_copy, split_comment

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
Some prose.

```bash
echo hello world          # prints a greeting
cd sub && pwd
export GREETING=hi
echo "$GREETING # not a comment"
false                     # exits 0 or 1 (here 1, on purpose)
```

<!-- not run: waits too long -->
```bash
sleep 300
```

<!-- output: echo hello world -->
```text
hello …
```

<!-- output: echo "$GREETING # not a comment" -->
```text
…
hi # not a comment
```
"""


def test_parse_reads_commands_comments_continuations_and_outputs() -> None:
    items = parse("```bash\nshipyard gate --candidate a \\\n    --champion b   # exits 0 or 1\n```\n" + SMALL)
    first = items[0]
    assert isinstance(first, Command) and first.text == "shipyard gate --candidate a --champion b"
    assert first.allowed_exits == {0, 1} and first.line == 2
    commands = [i for i in items if isinstance(i, Command)]
    assert commands[-1].skip_reason == "waits too long"
    outputs = [i for i in items if isinstance(i, Expected)]
    assert [o.command for o in outputs] == ["echo hello world", 'echo "$GREETING # not a comment"']
    assert split_comment("echo 'a # b' # c") == ("echo 'a # b'", "c")


def test_an_ellipsis_stands_for_lines_or_text_and_nothing_else() -> None:
    assert matches(["…", "step 40: released as v…", "…"], "start\nstep 40: released as v1\nend\n")
    assert matches(["a", "…", "z"], "a\nz")
    assert not matches(["a", "z"], "a\nb\nz")
    assert not matches(["step 40: released as v…"], "step 40: gate failed")


def test_a_broken_command_and_a_drifted_output_fail_the_check(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    readme = tmp_path / "README.md"
    readme.write_text(SMALL)
    report = check(readme, work, tmp_path / "commands.log")
    assert report.failures == [], report.failures
    assert report.skipped == ["README.md:14: sleep 300 (waits too long)"]

    readme.write_text(SMALL.replace("echo hello world ", "ehco hello world ", 1).replace("hello …", "hello world"))
    report = check(readme, work, tmp_path / "commands.log")
    assert any("`ehco hello world` exited 127" in f for f in report.failures), report.failures
    assert any("output of `echo hello world` shown, but the README never ran it" in f for f in report.failures)


def test_a_readme_command_broken_on_purpose_fails(tmp_path: Path) -> None:
    """One real command of the tour, misspelt: the check reports its line and exit status."""
    tour = [i for page in pages(ROOT / "README.md") for i in parse(page.read_text())]
    shown = next(i for i in tour if isinstance(i, Command) and "--help" in i.text)
    readme = tmp_path / "README.md"
    readme.write_text(f"```bash\nsource .venv/bin/activate\n{shown.text.replace('--help', '--hepl')}\n```\n")
    work = scratch_copy(ROOT, tmp_path / "work")
    report = check(readme, work, tmp_path / "commands.log")
    assert len(report.failures) == 1 and "exited 2" in report.failures[0], report.failures


def test_the_readme_is_a_page_that_links_every_doc_and_shows_no_test_markers() -> None:
    """The README stays short; the reference is docs/, one page per stage, each linked, so each is checked."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 350
    assert sorted(pages(readme)[1:]) == sorted((ROOT / "docs").glob("*.md"))
    for page in pages(readme):
        assert "not run by CI" not in page.read_text(), page  # the check's marks are HTML comments


def test_the_readme_shows_commands_not_placeholders() -> None:
    """A command with `<…>` or `[…]` in it cannot run as written: options belong in the prose."""
    commands = [i for page in pages(ROOT / "README.md") for i in parse(page.read_text()) if isinstance(i, Command)]
    assert len(commands) > 30
    for command in commands:
        if command.skip_reason is None:
            assert not re.search(r"<\w|\[-", command.text), f"README.md:{command.line}: {command.text}"


@pytest.mark.slow
@pytest.mark.readme
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    work = scratch_copy(ROOT, tmp_path / "shipyard")
    log = ROOT / "test-artifacts" / "readme-commands.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("")
    report = check(work / "README.md", work, log, running_under="make test")
    assert report.failures == [], "\n\n".join(report.failures)
    assert report.skipped and all("(" in s for s in report.skipped)
    _the_demo_from_elsewhere_reuses_its_run(work / "shipyard-demo", tmp_path)


def _the_demo_from_elsewhere_reuses_its_run(demo: Path, tmp_path: Path) -> None:
    """`shipyard demo --dir <relative path>` from another directory: the finished run and its stages are reused."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    relative = Path("..") / demo.relative_to(tmp_path)
    shipyard = str(ROOT / ".venv" / "bin" / "shipyard")
    done = subprocess.run(
        [shipyard, "demo", "--dir", str(relative), "--json"], cwd=cwd, env=clean_env(tmp_path), capture_output=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["directory"] == str(demo.resolve())
    assert (demo / "prefect" / "prefect.db").is_file()  # the flow runs are recorded in the demo's own Prefect home
    assert len(summary["releases"]) >= 2 and summary["stable"] is not None
    assert summary["approved"] == [], "a rerun releases and approves nothing"
