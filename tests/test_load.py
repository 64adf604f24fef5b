"""500 concurrent async streams against the replay server, 5% of them cut mid-way.

Not timed: it checks outcomes. Every stream ends complete after retries, every cut stream
yields one Reset, no connection is left open, and memory returns to its starting level.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import anyio
import httpx
import pytest

from tally_client import AsyncClient, Reset, RetryPolicy
from tally_client.testing.replay import ReplayServer, Reply, Scenario

pytestmark = [
    pytest.mark.load,
    # Replies are written in one piece, which is a buffering proxy's signature; not a defect here.
    pytest.mark.filterwarnings("ignore::tally_client.ProxyBufferingWarning"),
]

TEXT = Reply.from_file(Path(__file__).parent / "recordings" / "openai_chat" / "text.sse")
FULL_TEXT = "Hello! Café au lait — a classic ☕."
STREAMS = 500
CUT_EVERY = 20  # 5%
RETRY = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.05)


async def run_batch(server: ReplayServer, http: httpx.AsyncClient, n: int) -> tuple[int, int]:
    """Run n concurrent streams over one shared pool; return (complete, resets)."""
    cut = TEXT.replace(cut_after=TEXT.offset_after_event(6), cut="reset")
    counts = {"complete": 0, "resets": 0}

    async def one(i: int) -> None:
        # Scenarios are chosen by URL prefix: one light client per stream, one shared pool.
        url = server.add(Scenario(cut, TEXT) if i % CUT_EVERY == 0 else Scenario(TEXT))
        client = AsyncClient(base_url=url + "/v1", retry=RETRY, http_client=http)
        async with client.stream("hi") as stream:
            async for event in stream:
                counts["resets"] += isinstance(event, Reset)
        response = await stream.final()
        assert response.text == FULL_TEXT
        counts["complete"] += response.state == "complete"

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return counts["complete"], counts["resets"]


def test_500_concurrent_streams_with_5_percent_cut() -> None:
    async def main(server: ReplayServer) -> tuple[int, int, int]:
        limits = httpx.Limits(max_connections=1000)
        async with httpx.AsyncClient(timeout=None, limits=limits) as http:
            await run_batch(server, http, 40)  # warm-up: imports, caches, the pool
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            complete, resets = await run_batch(server, http, STREAMS)
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
        return complete, resets, growth

    tracemalloc.start()
    try:
        with ReplayServer() as server:
            complete, resets, growth = anyio.run(main, server)
            server.wait_for_idle(timeout=5.0)
            open_after = server.open_connections
    finally:
        tracemalloc.stop()
    assert complete == STREAMS
    assert resets == STREAMS // CUT_EVERY
    assert open_after == 0
    # The replay server runs in this process too and keeps a record of every request, so
    # allow it its bookkeeping; a leaked stream, response or connection costs far more.
    assert growth < 3_000_000, f"memory grew by {growth:,} bytes over {STREAMS} streams"
