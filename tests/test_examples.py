"""Every example runs, against the local model or the replay server, and says what it must."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tally_client.testing.llama import LlamaServer

EXAMPLES = Path(__file__).parent.parent / "examples"
# example -> text its output must contain
EXPECTED = {
    "quickstart.py": "respond chose: stream",
    "async_concurrent.py": "What is a prime number?",
    "structured_output.py": "parsed: Post(title=",
    "chat_ui_resets.py": "(complete, 2 attempts)",
    "pipeline.py": "rerun: 8 of 8 items taken from the checkpoint",
    "hosted_router.py": "when the hosted router fails: source fallback",
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*EXPECTED, "demo.py"])


@pytest.mark.live
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(llama: LlamaServer, name: str) -> None:
    # PYTHONPATH: the checkout under test, whichever one the venv's editable install names.
    env = {**os.environ, "TALLY_LOCAL_BASE_URL": llama.base_url, "PYTHONPATH": str(EXAMPLES.parent)}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(key, None)  # the examples must use the local model
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert EXPECTED[name] in out.stdout


@pytest.mark.live
def test_demo_runs_against_a_running_server(llama: LlamaServer) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), llama.base_url],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for heading in ("1. Routing", "2. A streamed answer", "3. An atomic JSON answer", "4. Usage"):
        assert heading in out.stdout
    assert "TTFT" in out.stdout
    assert "parsed: {" in out.stdout
    assert out.stdout.count("(reported by the server)") == 2
