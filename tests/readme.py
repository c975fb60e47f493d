"""The README check: run the README's commands as a reader would, in order, in a scratch copy of the project.

The README and the pages of `docs/` it links to, in the order it links them,
are one tour. Every fenced `bash` block is a list of commands, run one by
one in one shell session (the working directory and exported variables carry
over, as in a terminal) with a clean environment. A command must exit 0
unless its trailing comment says otherwise. What the check needs beyond that
sits in HTML comments, which a reader of the rendered page does not see:

- `<!-- output: COMMAND -->` before a fenced block: what the last run of
  COMMAND printed, compared line by line; a line that is only `…` stands for
  any number of lines, a `…` inside a line for any text (elisions a reader
  reads as such);
- `<!-- not run: why -->` before a `bash` block: its commands cannot run
  offline or here (a bucket, a GPU, a cluster); listed, not run.

Two trailing comments are for the reader as much as for the check:
`# … until Ctrl-C` marks a server (it must stay up, and answer the `http://…`
address in the comment, if one is given, then it is stopped), and
`# … exits 0 or 1 …` the exit statuses that are not failures.

Used by `tests/test_readme.py`; `python tests/readme.py [README]` runs it by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT_MARK = re.compile(r"<!--\s*output:\s*(.+?)\s*-->")
NOT_RUN_MARK = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
DOCS_LINK = re.compile(r"\]\((docs/[\w.-]+\.md)\)")
EXITS = re.compile(r"exits (\d+(?: or \d+)+)")
URL = re.compile(r"https?://\S+")
SERVER_UP_SECONDS = 20.0  # a server without an address must stay up this long
SERVER_ANSWER_SECONDS = 120.0  # a server with one must answer within this
CLEAN_ENV = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL")


@dataclass(frozen=True)
class Command:
    text: str
    comment: str
    line: int
    skip_reason: str | None = None  # the `not run` mark of its block

    @property
    def is_server(self) -> bool:
        return "until Ctrl-C" in self.comment

    @property
    def allowed_exits(self) -> set[int]:
        found = EXITS.search(self.comment)
        return {int(n) for n in re.findall(r"\d+", found.group(1))} if found else {0}


@dataclass(frozen=True)
class Expected:
    command: str
    lines: list[str]
    line: int


@dataclass
class Report:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def parse(text: str) -> list[Command | Expected]:
    """The README's commands and expected outputs, in order."""
    items: list[Command | Expected] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        start, info = i, fence[3:].strip().split(" ")[0]
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        body = lines[start + 1 : i]
        before = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        if output := OUTPUT_MARK.fullmatch(before):
            items.append(Expected(output.group(1).strip("`"), body, start + 1))
        elif info in ("bash", "sh", "shell"):
            not_run = NOT_RUN_MARK.fullmatch(before)
            items.extend(_commands(body, start + 2, not_run.group(1) if not_run else None))
        i += 1
    return items


def pages(readme: Path) -> list[Path]:
    """The README, then each page of docs/ it links to, in the order of its first link."""
    linked = dict.fromkeys(DOCS_LINK.findall(readme.read_text()))
    return [readme, *(readme.parent / name for name in linked)]


def _commands(body: list[str], first_line: int, skip: str | None = None) -> Iterator[Command]:
    pending, start = "", first_line
    for number, raw in enumerate(body, first_line):
        line = raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        whole = (pending + line.strip()).strip()
        pending = ""
        if whole and not whole.startswith("#"):
            command, comment = split_comment(whole)
            yield Command(command, comment, start, skip)


def split_comment(line: str) -> tuple[str, str]:
    """A command and its trailing `# comment`, a `#` inside quotes or a word left alone."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and i > 0 and line[i - 1] in " \t":
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line, ""


def matches(expected: list[str], actual: str) -> bool:
    """Whether `actual` is what `expected` shows, `…` standing for what varies."""
    pattern = []
    for line in _trimmed(expected):
        if line.strip() == "…":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append("[^\n]*?".join(re.escape(part) for part in line.split("…")) + r"\n")
    return re.fullmatch("".join(pattern), "".join(f"{line}\n" for line in _trimmed(actual.splitlines()))) is not None


def _trimmed(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


class Shell:
    """One shell session over separate processes: the working directory and exported variables carry over."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        (self.state / "cwd").write_text(str(cwd))
        (self.state / "env.sh").write_text("")
        self.env, self.log = env, log

    def _script(self, command: str, keep_state: bool) -> str:
        head = f'source "{self.state}/env.sh"\ncd "$(cat "{self.state}/cwd")" || exit 97\n'
        if not keep_state:
            return head + command + "\n"
        tail = f'__rc=$?\npwd > "{self.state}/cwd"\nexport -p > "{self.state}/env.sh"\nexit $__rc\n'
        return head + command + "\n" + tail

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        done = subprocess.run(
            ["bash", "-c", self._script(command, keep_state=True)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        self._log(command, done.stdout, done.returncode)
        return done.returncode, done.stdout

    def serve(self, command: str, url: str | None) -> str | None:
        """Start a server, see it stay up (and answer `url`), stop it; what went wrong, or None."""
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(
                ["bash", "-c", self._script(command, keep_state=False)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                problem = _watch_server(proc, url)
            finally:
                _stop(proc)
                out.seek(0)
                self._log(command, out.read(), proc.returncode)
        return problem

    def _log(self, command: str, output: str, returncode: int | None) -> None:
        with self.log.open("a") as f:
            f.write(f"$ {command}\n{output}[exit {returncode}]\n\n")


def _watch_server(proc: subprocess.Popen[str], url: str | None) -> str | None:
    deadline = time.monotonic() + (SERVER_ANSWER_SECONDS if url else SERVER_UP_SECONDS)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode} instead of serving"
        if url and _answers(url):
            return None
        time.sleep(1.0)
    return f"{url} did not answer within {SERVER_ANSWER_SECONDS:.0f} s" if url else None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status < 500)
    except OSError:
        return False


def _stop(proc: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the server left behind in its group


def scratch_copy(root: Path, into: Path) -> Path:
    """The project's files (tracked and new, as git sees them) copied with their times; `.venv` linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = root / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    if (root / ".venv").exists():
        (into / ".venv").symlink_to(root / ".venv")
        stale = subprocess.run(["make", "-q", "setup"], cwd=into, capture_output=True).returncode
        if stale:  # `make` would install into the linked .venv and point it at the copy
            raise RuntimeError(f"{root}/.venv is older than pyproject.toml or constraints.txt: run `make setup` first")
    return into


def clean_env(home: Path) -> dict[str, str]:
    """What a reader's fresh terminal has: no SHIPYARD_/PREFECT_/AWS_ settings, a home of its own, offline."""
    env = {k: v for k, v in os.environ.items() if k in CLEAN_ENV}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if not Path(p, "activate").is_file()]  # no venv
    return env | {"PATH": os.pathsep.join(path), "HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def check(readme: Path, workdir: Path, log: Path, running_under: str = "", timeout: float = 1800.0) -> Report:
    """Run the commands of `readme` and of the docs it links to in `workdir`; every failure and every command
    not run, with its file and line."""
    report = Report()
    home = workdir.parent / "home"
    home.mkdir(exist_ok=True)
    shell = Shell(workdir, clean_env(home), log, workdir.parent / "shell-state")
    outputs: dict[str, str] = {}
    tour = [(page, item) for page in pages(readme) for item in parse(page.read_text())]
    for page, item in tour:
        where = f"{page.relative_to(readme.parent)}:{item.line}"
        if isinstance(item, Expected):
            if item.command not in outputs:
                report.failures.append(f"{where}: output of `{item.command}` shown, but the README never ran it")
            elif not matches(item.lines, outputs[item.command]):
                report.failures.append(f"{where}: `{item.command}` printed something else:\n{outputs[item.command]}")
            continue
        reason = "the command this check runs inside" if item.text == running_under else item.skip_reason
        if reason:
            report.skipped.append(f"{where}: {item.text} ({reason})")
            continue
        _say(f"$ {item.text}")
        started = time.monotonic()
        if item.is_server:
            urls = URL.findall(item.comment)
            problem = shell.serve(item.text, urls[0] if urls else None)
            if problem:
                report.failures.append(f"{where}: `{item.text}` {problem}")
        else:
            code, outputs[item.text] = shell.run(item.text, timeout)
            if code not in item.allowed_exits:
                tail = "\n".join(outputs[item.text].splitlines()[-30:])
                report.failures.append(f"{where}: `{item.text}` exited {code}:\n{tail}")
        report.ran.append(item.text)
        _say(f"  ({time.monotonic() - started:.0f} s)")
    return report


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    readme = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "README.md"
    scratch = Path(tempfile.mkdtemp(prefix="readme-check-"))
    work = scratch_copy(root, scratch / "shipyard")
    shutil.copy2(readme, work / "README.md")
    report = check(work / "README.md", work, scratch / "commands.log", running_under="make test")
    for line in report.skipped:
        print(f"not run: {line}")
    for line in report.failures:
        print(f"FAILED {line}")
    print(f"{len(report.ran)} commands run, {len(report.skipped)} not run, {len(report.failures)} failed; in {scratch}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
