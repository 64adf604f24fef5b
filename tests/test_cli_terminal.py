"""`tally` as a person runs it: a real process in a pseudo-terminal, against the replay server
and the real local model. A terminal streams; a pipe gets one atomic, undecorated answer;
Ctrl-C closes the connection, keeps what arrived, and exits 130."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tally_client.testing import ReplayServer, Reply
from tally_client.testing.llama import LlamaServer

from .test_cli import chat_json, chat_sse

ROOT = Path(__file__).parent.parent
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("TALLY_LOCAL_BASE_URL", None)
    env.update(extra, PYTHONUNBUFFERED="1", TERM="xterm")
    return env


class Terminal:
    """`python -m tally_client ARGS` with stdin, stdout and stderr on a pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tally_client", *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
        )  # fmt: skip
        os.close(slave)
        self.output = b""
        self.chunks: list[tuple[float, bytes]] = []

    def read_until(self, done: Callable[[str], bool], timeout: float) -> str:
        """Read the terminal until `done(text so far)` or EOF; fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not done(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                pytest.fail(f"timed out; the terminal showed: {self.text!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            self.chunks.append((time.monotonic(), data))
            self.output += data
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def finish(self, timeout: float = 60.0) -> int:
        """Read to the end (the process exited and closed the terminal); its exit status."""
        self.read_until(lambda _: False, timeout)
        code = self.proc.wait(timeout)
        os.close(self.master)
        return code


def _paced_story(words: int, delay: float) -> Reply:
    return Reply(body=chat_sse(*(f"word{i} " for i in range(words))), chunk_delay=delay)


def test_a_terminal_streams_and_a_pipe_gets_one_atomic_answer() -> None:
    with ReplayServer() as server:
        streamed = server.add(_paced_story(6, 0.05).replace(headers_delay=0.6))
        term = Terminal(["-v", "A story.", "--base-url", streamed + "/v1"], _env())
        code = term.finish()
        assert code == 0, term.text
        assert server.requests(streamed)[0].json()["stream"] is True
        assert "word0 word1 word2 word3 word4 word5" in term.text
        assert "a person is reading" in term.text  # -v: the router's reason, not an override
        assert any(frame in term.text for frame in SPINNER_FRAMES)  # while headers waited

        forced = server.add(chat_json("whole answer"))
        term = Terminal(["-v", "--no-stream", "A story.", "--base-url", forced + "/v1"], _env())
        code = term.finish()
        assert code == 0, term.text
        assert not server.requests(forced)[0].json().get("stream")
        assert "the caller chose complete()" in term.text
        assert "whole answer" in term.text

        atomic = server.add(chat_json("whole answer"))
        piped = subprocess.run(
            [sys.executable, "-m", "tally_client", "A story.", "--base-url", atomic + "/v1"],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == "whole answer\n"  # no spinner, no colour, no notice
        assert piped.stderr == ""
        assert not server.requests(atomic)[0].json().get("stream")


def test_ctrl_c_closes_the_connection_keeps_the_text_and_exits_130() -> None:
    with ReplayServer() as server:
        url = server.add(_paced_story(200, 0.1))
        term = Terminal(["A long story.", "--base-url", url + "/v1"], _env())
        term.read_until(lambda text: "word3 " in text, timeout=30)
        term.proc.send_signal(signal.SIGINT)
        code = term.finish()
        assert code == 130, term.text
        assert "word0 word1 word2 word3" in term.text
        assert "word199" not in term.text
        assert "[interrupted:" in term.text
        server.wait_for_disconnect(url, timeout=5)  # the server saw the client go


@pytest.mark.live
def test_live_terminal_streams_the_local_model(llama: LlamaServer) -> None:
    env = _env(TALLY_LOCAL_BASE_URL=llama.base_url)
    term = Terminal(["-v", "--max-tokens", "60", "Tell me about the sea."], env)
    code = term.finish(timeout=120)
    assert code == 0, term.text
    assert "local/local, stream" in term.text
    assert "TTFT" in term.text
    assert "tokens/s" in term.text

    piped = subprocess.run(
        [sys.executable, "-m", "tally_client", "--json", "--max-tokens", "20",
         "Name the capital of France."],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    data = json.loads(piped.stdout)
    assert data["decision"]["stream"] is False
    assert data["state"] == "complete"
    assert data["usage"]["reported"] is True
    assert 0 < data["usage"]["output_tokens"] <= 20


@pytest.mark.live
def test_live_ctrl_c_stops_the_generation(llama: LlamaServer) -> None:
    env = _env(TALLY_LOCAL_BASE_URL=llama.base_url)
    # ignore_eos (a llama-server option, passed with -o) keeps it generating to max_tokens
    args = ["--stream", "--max-tokens", "1500", "-o", "ignore_eos=true", "Write a long story."]
    term = Terminal(args, env)
    # the spinner ends by clearing its line and showing the cursor; the words follow
    term.read_until(
        lambda text: len(text.partition("\x1b[K\x1b[?25h")[2].split()) >= 8, timeout=120
    )
    term.proc.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    code = term.finish()
    assert code == 130, term.text
    assert "[interrupted:" in term.text

    def busy() -> bool:
        slots = httpx.get(f"{llama.root_url}/slots", timeout=5).json()
        return any(slot["is_processing"] for slot in slots)

    while busy():  # llama-server stops a generation whose client went away
        assert time.monotonic() - interrupted_at < 5, "the server kept generating"
        time.sleep(0.1)
