"""The example chat page in a real headless Chromium, over the relay."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from tally_client import AsyncClient
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.testing.llama import LlamaServer

from .servers import load_example, serve

create_app = load_example().create_app

RECORDINGS = Path(__file__).parent.parent / "recordings"
TEXT = "Hello! Café au lait — a classic ☕."

# Records every change of the last answer's text, with the bubble's state at that moment.
WATCH = """() => {
  window.growth = [];
  const record = () => {
    const bubbles = document.querySelectorAll('#messages .assistant');
    const last = bubbles[bubbles.length - 1];
    if (!last) return;
    const text = last.querySelector('.text').textContent;
    const g = window.growth;
    if (!g.length || g[g.length - 1].text !== text)
      g.push({ text, state: last.dataset.state, t: performance.now() });
  };
  new MutationObserver(record).observe(document.getElementById('messages'),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def ask(page: Any, base: str, prompt: str) -> None:
    page.goto(base + "/")
    page.evaluate(WATCH)
    page.fill("#prompt", prompt)
    page.click("#send")


def final_state(page: Any, timeout_ms: float = 30_000) -> str:
    page.wait_for_function(
        "() => { const b = document.querySelector('#messages .assistant');"
        " return b && !['waiting', 'streaming'].includes(b.dataset.state); }",
        timeout=timeout_ms,
    )
    return str(page.get_attribute("#messages .assistant", "data-state"))


def test_the_answer_grows_in_the_page(page: Any, artifacts: Path) -> None:
    paced = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse", chunk_delay=0.08)
    with ReplayServer() as server:
        app = create_app(AsyncClient(base_url=server.add(Scenario(paced)) + "/v1"))
        with serve(app) as base:
            ask(page, base, "Say hello")
            assert final_state(page) == "complete"
            page.screenshot(path=str(artifacts / "chat_complete.png"), full_page=True)
    growth = page.evaluate("window.growth")
    while_streaming = [g for g in growth if g["state"] == "streaming" and g["text"]]
    assert len(while_streaming) >= 8  # ten deltas, each its own DOM update
    assert all(len(a["text"]) < len(b["text"]) for a, b in itertools.pairwise(while_streaming))
    assert while_streaming[-1]["t"] - while_streaming[0]["t"] > 0.4 * 1000  # not one burst
    assert page.text_content("#messages .assistant .text") == TEXT
    assert "TTFT" in page.text_content("#messages .assistant .meta")
    assert app.state.results[0].response.state == "complete"


def test_stop_button_closes_the_upstream_connection(page: Any) -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    stalled = good.replace(stall_after=good.offset_after_event(4))  # 3 deltas, then waits
    with ReplayServer() as server:
        url = server.add(Scenario(stalled))
        app = create_app(AsyncClient(base_url=url + "/v1"))
        with serve(app) as base:
            ask(page, base, "Say hello")
            page.wait_for_function(
                "() => document.querySelector('#messages .assistant .text').textContent.length > 0"
            )
            assert page.is_enabled("#stop")
            page.click("#stop")
            assert final_state(page) == "stopped"
            request = server.wait_for_disconnect(url, timeout=5)  # the provider saw us leave
            deadline = time.monotonic() + 5
            while not app.state.results and time.monotonic() < deadline:
                time.sleep(0.02)
        assert server.open_connections == 0
    assert request.closed_early
    result = app.state.results[0]
    assert result.disconnected and result.response.state == "cancelled"
    assert result.response.text == page.text_content("#messages .assistant .text") == "Hello! Café"
    assert result.output_tokens == 3 and result.output_tokens_saved == 400 - 3
    assert page.is_enabled("#send") and not page.is_enabled("#stop")


def test_a_cut_stream_shows_the_reset_then_the_full_retry(page: Any, artifacts: Path) -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse", chunk_delay=0.05)
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    with ReplayServer() as server:
        app = create_app(AsyncClient(base_url=server.add(Scenario(cut, good)) + "/v1"))
        with serve(app) as base:
            ask(page, base, "Say hello")
            assert final_state(page) == "complete"
            page.screenshot(path=str(artifacts / "chat_after_reset.png"), full_page=True)
    texts = [g["text"] for g in page.evaluate("window.growth")]
    cleared = texts.index("", 1)  # after the first attempt's text, the page cleared it
    assert "Hello! Café au" in texts[:cleared]
    assert texts[-1] == TEXT and texts[cleared + 1 :].count("") == 0
    assert page.get_attribute("#messages .assistant", "data-resets") == "1"
    assert "answer restarted (attempt 2)" in page.text_content("#messages .assistant .note")


@pytest.mark.live
def test_live_model_answer_grows_then_stop_saves_tokens(
    page: Any, llama: LlamaServer, artifacts: Path
) -> None:
    short = create_app(AsyncClient(base_url=llama.base_url), max_tokens=40)
    with serve(short) as base:
        ask(page, base, "Write a short poem about the sea.")
        assert final_state(page, 120_000) == "complete"
        page.screenshot(path=str(artifacts / "chat_live.png"), full_page=True)
    growth = page.evaluate("window.growth")
    assert len([g for g in growth if g["state"] == "streaming" and g["text"]]) >= 5
    assert short.state.results[0].response.usage.output_tokens > 0

    long = create_app(AsyncClient(base_url=llama.base_url), max_tokens=400)
    with serve(long) as base:
        ask(page, base, "Write a very long story about a lighthouse keeper.")
        page.wait_for_function(
            "() => document.querySelector('#messages .assistant .text').textContent.length > 20",
            timeout=120_000,
        )
        page.click("#stop")
        assert final_state(page) == "stopped"
        deadline = time.monotonic() + 10
        while not long.state.results and time.monotonic() < deadline:
            time.sleep(0.05)
    stopped = long.state.results[0]
    assert stopped.disconnected and stopped.response.state == "cancelled"
    assert 0 < stopped.output_tokens < 400
    assert stopped.output_tokens_saved == 400 - stopped.output_tokens
