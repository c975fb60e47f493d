"""A checkpoint's chat template, rendered once under a time and memory bound before anything else renders it.

A Jinja template is a program: nested loops in `tokenizer_config.json` can
take minutes and gigabytes the first time a tokenizer formats a conversation.
Validation renders each template the checkpoint carries
(`tokenizer_config.json`'s `chat_template`, a string or a list of named
templates, and `chat_template.jinja`) on a short conversation, in a child
process with limited CPU time and address space and no stdin, the way
transformers renders it (a sandboxed, immutable Jinja environment with its
`generation` block, loop controls, `raise_exception` and `strftime_now`). A template
that runs over the bound, runs out of memory or fails on a plain conversation
is refused with the reason. Called by `shipyard.intake.validation`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shipyard.errors import InvalidCheckpoint

SECONDS = 5
MEMORY_BYTES = 1 << 30
# The child limits itself first (a preexec_fn is unsafe in a process with threads, as Prefect's are).
RENDER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_CPU, (SECONDS, SECONDS))
resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
import datetime
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
class Generation(Extension):  # transformers' {% generation %} block, which marks assistant tokens
    tags = {"generation"}
    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(["name:endgeneration"], drop_needle=True)
def raise_exception(message):
    raise TemplateError(message)
env = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[Generation, "jinja2.ext.loopcontrols"]
)
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"},
            {"role": "user", "content": "And 4 + 4?"}]
out = env.from_string(sys.stdin.read()).render(messages=messages, add_generation_prompt=True,
                                               bos_token="<s>", eos_token="</s>")
print(len(out))
""".replace("MEMORY_BYTES", str(MEMORY_BYTES)).replace("SECONDS", str(SECONDS))


def templates(root: Path) -> dict[str, str]:
    """Every chat template the checkpoint carries, by where it comes from."""
    found: dict[str, str] = {}
    config = root / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text()).get("chat_template")
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise InvalidCheckpoint(f"{config}: not a JSON object ({exc})") from None
        if isinstance(value, str):
            found[str(config)] = value
        elif isinstance(value, list):
            found |= {f"{config} ({t.get('name')})": t.get("template", "") for t in value if isinstance(t, dict)}
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        found[str(jinja)] = jinja.read_text(errors="replace")
    return found


def check_chat_templates(root: Path) -> None:
    """Refuse a chat template that does not render a short conversation within the bound."""
    for where, template in templates(root).items():
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", RENDER],
                input=template,
                capture_output=True,
                text=True,
                timeout=SECONDS * 2,
            )
        except subprocess.TimeoutExpired:
            raise InvalidCheckpoint(f"{where}: chat template still rendering after {SECONDS * 2} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["killed"])[-1][:300]
            bound = f"{SECONDS} s of CPU or {MEMORY_BYTES >> 20} MiB"
            raise InvalidCheckpoint(
                f"{where}: chat template does not render a short conversation within {bound}: {last}"
            )
