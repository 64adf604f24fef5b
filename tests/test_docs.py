"""Every code block in README.md and docs/*.md runs, as written, against the local model.

Which blocks run: `python` blocks (each in a fresh interpreter), and `sh`/`bash` blocks (each
with `bash -e`, `tally` on PATH). Other info strings (`text`, `yaml`, none) are output or
pictures, not code. README python blocks run after the quickstart's import
(`from tally_client import Client`), as the README promises; docs blocks run standalone.

Every process gets no provider key and `TALLY_LOCAL_BASE_URL` pointing at the session's
llama-server, so `Client()` is the real local model; the working directory is the repository
root (the testing guide's recordings are found there).

An HTML comment right before a block changes how it runs:
- `<!-- docs-test: skip (reason) -->`: not run; the reason is required and says why.
- `<!-- docs-test: env KEY=VALUE ... -->`: run with these extra environment variables (e.g.
  dummy keys for a block that only builds SDK clients).
- `<!-- docs-test: continue -->`: run after the previous runnable block of the same file (and
  whatever that one continued), for a guide that builds one example over several blocks.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tally_client.testing.llama import LlamaServer

ROOT = Path(__file__).parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
README_PRELUDE = "from tally_client import Client\n"

_BLOCK = re.compile(
    r"(?:^<!--\s*docs-test:\s*(?P<directive>.*?)\s*-->\s*\n)?"
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    directive: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(files: list[Path]) -> list[Block]:
    found = []
    for path in files:
        text = path.read_text()
        previous = ""
        for match in _BLOCK.finditer(text):
            indent = len(match["indent"])
            code = "\n".join(line[indent:] for line in match["code"].splitlines())
            line = text.count("\n", 0, match.start("lang")) + 1
            directive = match["directive"] or ""
            if directive == "continue":
                code = previous + "\n" + code
            if match["lang"] in RUNNABLE and not directive.startswith("skip"):
                previous = code
            found.append(Block(path, line, match["lang"], code, directive))
    return found


BLOCKS = _blocks(FILES)
TO_RUN = [b for b in BLOCKS if b.lang in RUNNABLE and not b.directive.startswith("skip")]


def test_blocks_are_found_and_every_skip_says_why() -> None:
    assert any(b.path.name == "README.md" for b in TO_RUN)
    assert {b.path.name for b in TO_RUN} >= {"README.md", "cli.md", "observability.md"}
    for block in BLOCKS:
        directive = block.directive
        if directive.startswith("skip"):
            assert re.fullmatch(r"skip \(.{10,}\)", directive), f"{block.id}: give a reason"
        else:
            known = directive in ("", "continue") or directive.startswith("env ")
            assert known, f"{block.id}: unknown directive {directive!r}"


def test_directives_shape_the_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\na = 1\n```\n\n"
        "<!-- docs-test: skip (shown for its shape only) -->\n```python\nb = 2\n```\n\n"
        "```text\nnot code\n```\n\n"
        "<!-- docs-test: continue -->\n```python\nprint(a)\n```\n\n"
        "<!-- docs-test: continue -->\n  ```python\n  print(a + 1)\n  ```\n"
    )
    blocks = _blocks([page])
    assert [(b.lang, b.directive.split(" ")[0]) for b in blocks] == [
        ("python", ""), ("python", "skip"), ("text", ""), ("python", "continue"),
        ("python", "continue"),
    ]  # fmt: skip
    assert blocks[3].code == "a = 1\nprint(a)"  # the skipped block is not part of it
    assert blocks[4].code == "a = 1\nprint(a)\nprint(a + 1)"  # indentation removed


@pytest.fixture(scope="module")
def tally_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a `tally` script that runs this checkout's CLI."""
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "tally"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tally_client "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir


@pytest.mark.live
@pytest.mark.parametrize("block", TO_RUN, ids=[b.id for b in TO_RUN])
def test_block_runs_as_written(
    block: Block, llama: LlamaServer, tally_bin: Path, tmp_path: Path
) -> None:
    # Each block runs in a fresh directory (files it writes, such as a map() checkpoint, do
    # not leak into the checkout or into the next run); the repository's folders that
    # snippets name by relative path are linked in.
    for name in ("tests", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
    env.update(
        TALLY_LOCAL_BASE_URL=llama.base_url,
        PATH=f"{tally_bin}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )
    if block.directive.startswith("env "):
        for pair in block.directive[4:].split():
            key, _, value = pair.partition("=")
            env[key] = value
    if RUNNABLE[block.lang] == "python":
        code = (README_PRELUDE if block.path.name == "README.md" else "") + block.code
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    out = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"{block.id} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
