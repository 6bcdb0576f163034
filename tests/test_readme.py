"""Every README block runs as written.

Python blocks run in a fresh interpreter each (a block whose first line is ``# (continues the
block above)`` runs after the block it continues, as one program); ``console`` blocks run their
``$ `` commands, ``bash`` blocks every line; ``toml`` blocks are validated as experiment files.
All run in one scratch folder with a copy of ``examples/``, with ``wdlab`` on the PATH.

An HTML comment on the lines right above a block (invisible on GitHub) may say how the test
treats it; the README's Development section documents these:

* ``<!-- test: skip REASON -->``: not run (a reason is required: it installs packages, joins a
  Ray cluster, runs the test suite itself…);
* ``<!-- test: file NAME -->``: the block is a file the blocks after it use; it is written to
  NAME in the scratch folder before any block runs;
* ``<!-- test: exit N -->``: the commands end with status N (``wdlab audit`` exits 1 when it
  finds warnings);
* ``<!-- test: replace "OLD" "NEW" -->``: a smaller size for CI (more epochs, a larger
  grid…); OLD must occur in the block, so a stale substitution fails instead of passing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = ("python", "console", "bash", "toml")  # the languages a block is run (or checked) in
CONTINUES = "# (continues the block above)"
MARKER = re.compile(r"^<!-- test: (?P<verb>skip|file|exit|replace)\b ?(?P<arg>.*?) ?-->$")
TIMEOUT = 600


@dataclass
class Block:
    """One fenced block of the README: its language, text, first line and markers."""

    lang: str
    text: str
    line: int
    skip: str = ""
    file: str = ""
    exit: int = 0
    replace: list[tuple[str, str]] = field(default_factory=list)
    previous: Block | None = None  # the block a continuation continues

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}"

    def program(self) -> str:
        """The text that runs: the blocks it continues, then its own, with the replacements."""
        text = self.text
        for old, new in self.replace:
            assert old in text, f"README line {self.line}: replace {old!r}: not in the block"
            text = text.replace(old, new)
        return (self.previous.program() + "\n" if self.previous else "") + text


def _mark(block: Block, verb: str, arg: str, line: int) -> None:
    if verb == "skip":
        assert arg, f"README line {line}: a skipped block says why"
        block.skip = arg
    elif verb == "file":
        block.file = arg
    elif verb == "exit":
        block.exit = int(arg)
    else:
        old, new = shlex.split(arg)
        block.replace.append((old, new))


def parse(text: str) -> list[Block]:
    """The README's fenced blocks with their markers; continuations linked to their block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(lines[i][3:].strip(), "\n".join(lines[i + 1 : end]) + "\n", i + 2)
        k = i - 1
        while k >= 0 and (m := MARKER.match(lines[k].strip())):
            _mark(block, m["verb"], m["arg"], k + 1)
            k -= 1
        if block.lang == "python" and block.text.startswith(CONTINUES):
            block.previous = next(b for b in reversed(blocks) if b.lang == "python")
        blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = parse(README.read_text(encoding="utf-8"))
# a file block is written, not run (a TOML file is still validated)
RUNNABLE = [b for b in BLOCKS if b.lang in RUN and not b.skip and (b.lang == "toml" or not b.file)]


def commands(block: Block) -> str:
    """A console block's ``$ `` commands (with their ``\\`` continuation lines), or a bash
    block's text, as one bash script."""
    if block.lang == "bash":
        return block.program()
    out, more = [], False
    for line in block.program().splitlines():
        if line.startswith("$ ") or more:
            out.append(line[2:] if line.startswith("$ ") else line)
            more = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch folder with examples/ and the README's files, wdlab first on the PATH."""
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", d / "examples")
    for b in BLOCKS:
        if b.file:
            (d / b.file).write_text(b.program(), encoding="utf-8")
    return d


def _env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("WDLAB_DEBUG", None)
    return env


def test_the_readme_has_blocks_and_every_skip_says_why():
    """The parser sees the README's blocks; no block is skipped without a reason, and each
    language that runs has runnable blocks (a broken parser cannot pass quietly)."""
    assert {b.lang for b in RUNNABLE} == set(RUN)
    assert len(RUNNABLE) >= 15
    for b in BLOCKS:
        if b.lang in ("py", "sh", "shell", "python3"):
            pytest.fail(f"README line {b.line}: name the language python, bash or console")


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_readme_block_runs_as_written(block, workdir):
    if block.lang == "toml":
        from wdlab.config import validate

        validate(tomllib.loads(block.program()))
        return
    if block.lang == "python":
        script = workdir / f"block_{block.line}.py"
        script.write_text(block.program(), encoding="utf-8")
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", commands(block)]
    proc = subprocess.run(
        argv, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == block.exit, (
        f"README line {block.line} ({block.lang}) exited {proc.returncode}, expected "
        f"{block.exit}\n--- ran:\n{argv[-1] if block.lang != 'python' else block.program()}"
        f"\n--- stdout (end):\n{proc.stdout[-3000:]}\n--- stderr (end):\n{proc.stderr[-3000:]}"
    )
