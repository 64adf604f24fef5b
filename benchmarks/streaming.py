"""Per-chunk cost of `Client.stream()` / `AsyncClient.stream()` against raw httpx + httpx-sse.

The baseline is what a user would write by hand: `httpx` (same pool and keep-alive settings as
tally_client's own client) + `httpx_sse.EventSource` + `json.loads` of every event's data. Ours
is `client.stream(...)` iterated to its end and checked complete. Both read the same
20,000-event streams from the loopback server (`_server.py`), in the OpenAI Chat Completions
and the Anthropic Messages formats, sync and async:

- `chunked`: one HTTP chunk per SSE event, as providers send them (the target applies here:
  at most 1.2x);
- `content-length`: the whole body at once, a second line showing the parse cost alone.

Runs alternate (baseline, ours, baseline, ...) and medians are compared, so machine load hits
both alike.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable

import anyio
import httpx
from httpx_sse import EventSource

from tally_client import AsyncClient, Client, RetryPolicy, TextDelta

from ._common import QUICK, check, pool_limits
from ._server import FORMATS, FRAMINGS, LoopbackServer

SECTION = "streaming"
TARGET = 1.2
EVENTS = 2_000 if QUICK else 20_000
ROUNDS = 3 if QUICK else 5

PROTOCOL_PATH = {"openai-chat": "/v1/chat/completions", "anthropic": "/v1/messages"}


def _client_kwargs(fmt: str, base: str) -> dict[str, object]:
    if fmt == "anthropic":
        return {"base_url": base, "protocol": "anthropic", "api_key": "bench", "model": "bench"}
    return {"base_url": base + "/v1", "model": "bench"}


def raw_sync(http: httpx.Client, url: str) -> int:
    """Read one stream by hand; return how many events carried JSON."""
    n = 0
    with http.stream("POST", url, json={"model": "bench", "stream": True}) as response:
        for sse in EventSource(response).iter_sse():
            if sse.data != "[DONE]":
                json.loads(sse.data)
                n += 1
    return n


def ours_sync(client: Client) -> int:
    """Read one stream with tally_client; return how many text deltas it yielded."""
    n = 0
    with client.stream("benchmark") as stream:
        for event in stream:
            if type(event) is TextDelta:
                n += 1
    assert stream.final().state == "complete"
    return n


async def raw_async(http: httpx.AsyncClient, url: str) -> int:
    """`raw_sync`, async."""
    n = 0
    async with http.stream("POST", url, json={"model": "bench", "stream": True}) as response:
        async for sse in EventSource(response).aiter_sse():
            if sse.data != "[DONE]":
                json.loads(sse.data)
                n += 1
    return n


async def ours_async(client: AsyncClient) -> int:
    """`ours_sync`, async."""
    n = 0
    async with client.stream("benchmark") as stream:
        async for event in stream:
            if type(event) is TextDelta:
                n += 1
    assert (await stream.final()).state == "complete"
    return n


def _alternate(
    base: Callable[[], int], ours: Callable[[], int], events: int, rounds: int
) -> tuple[float, float]:
    """Median seconds per event of each, alternating which goes first."""
    times: dict[str, list[float]] = {"base": [], "ours": []}
    base(), ours()  # warm both paths and the connections
    for r in range(rounds):
        order = [("base", base), ("ours", ours)]
        for key, fn in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            count = fn()
            times[key].append((time.perf_counter() - t) / events)
            assert count >= events, (key, count)
    return statistics.median(times["base"]), statistics.median(times["ours"])


def measure_sync(server: LoopbackServer, fmt: str, framing: str) -> tuple[float, float]:
    """Median seconds per event: (raw, ours), sync."""
    base = server.url(fmt, framing, EVENTS)
    url = base + PROTOCOL_PATH[fmt]
    with (
        httpx.Client(timeout=None, limits=pool_limits()) as http,
        Client(retry=RetryPolicy(1), **_client_kwargs(fmt, base)) as client,  # type: ignore[arg-type]
    ):
        return _alternate(lambda: raw_sync(http, url), lambda: ours_sync(client), EVENTS, ROUNDS)


def measure_async(server: LoopbackServer, fmt: str, framing: str) -> tuple[float, float]:
    """Median seconds per event: (raw, ours), async (asyncio)."""
    base = server.url(fmt, framing, EVENTS)
    url = base + PROTOCOL_PATH[fmt]

    async def main() -> tuple[float, float]:
        times: dict[str, list[float]] = {"base": [], "ours": []}
        async with (
            httpx.AsyncClient(timeout=None, limits=pool_limits()) as http,
            AsyncClient(retry=RetryPolicy(1), **_client_kwargs(fmt, base)) as client,  # type: ignore[arg-type]
        ):
            await raw_async(http, url)
            await ours_async(client)
            for r in range(ROUNDS):
                order = [("base", True), ("ours", False)]
                for key, is_base in order if r % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    count = await (raw_async(http, url) if is_base else ours_async(client))
                    times[key].append((time.perf_counter() - t) / EVENTS)
                    assert count >= EVENTS, (key, count)
        return statistics.median(times["base"]), statistics.median(times["ours"])

    return anyio.run(main)


def run() -> None:
    """Print one line per (sync/async, format, framing)."""
    print(f"{SECTION}: seconds per event over {EVENTS:,}-event streams, median of {ROUNDS}")
    warnings.simplefilter("ignore")  # bodies arrive in large reads: not a proxy here
    with LoopbackServer() as server:
        for framing in FRAMINGS:
            for fmt in FORMATS:
                for mode, measure in (("sync", measure_sync), ("async", measure_async)):
                    base, ours = measure(server, fmt, framing)
                    check(
                        SECTION,
                        f"{mode} {fmt} {framing}",
                        ("raw httpx-sse", base),
                        ("tally_client", ours),
                        unit="us",
                        scale=1e6,
                        # The target is for streams framed as providers frame them; the
                        # content-length line shows the parse cost alone, for information.
                        most=TARGET if framing == "chunked" else None,
                    )
