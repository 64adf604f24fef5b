"""First-token overhead on the real llama-server (SmolLM2-135M), against raw httpx-sse.

Both sides send the same request body (captured from tally_client's own first request, so the
server does the same work), over the same pool settings, keep-alive on. The time runs from
starting the call to the first non-empty text delta: `client.stream(...)` up to the first
`TextDelta`, against `http.stream(...)` + httpx-sse + `json.loads` up to the first chunk whose
`choices[0].delta.content` is non-empty. Each stream is then read to its end (a few tokens).
Requests interleave (raw, ours, ours, raw, ...), sync and async.

Keep-alive is off on both sides (each request opens its own loopback connection): llama-server
closes the connection after about half of its streamed responses, racing the client's next
request on it ("Server disconnected without sending a response"), which would otherwise make
raw calls fail and tally_client calls retry.

Target: tally_client adds under 2 ms at p50 (p95 shown for information).

The model's own time varies by tens of milliseconds on a busy machine, which can hide a
difference of 2 ms; so the same measurement also runs against the loopback server (`_server`,
a 10-event stream written at once), where nearly all of the time is the client's: that line
isolates what tally_client adds before the first token.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource

from tally_client import AsyncClient, Client, RetryPolicy, TextDelta
from tally_client.testing.llama import LlamaServer

from ._common import QUICK, check, percentile, pool_limits
from ._server import LoopbackServer

SECTION = "first_token"
TARGET = 0.002
PAIRS = 10 if QUICK else 40
LOOPBACK_PAIRS = 50 if QUICK else 300
PROMPT = "Say hello."
OPTIONS: dict[str, Any] = {"max_tokens": 2, "temperature": 0.0}


def _limits() -> httpx.Limits:
    """tally_client's pool settings with keep-alive off (see the module docstring)."""
    return httpx.Limits(max_connections=pool_limits().max_connections, max_keepalive_connections=0)


def _first_content(data: str) -> bool:
    if data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _captured_body(base_url: str) -> dict[str, Any]:
    """The JSON body tally_client sends for PROMPT and OPTIONS (from a real request)."""
    seen: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [seen.append]}, timeout=60, limits=_limits()) as http,
        Client(base_url=base_url, http_client=http, retry=RetryPolicy(1)) as client,
    ):
        client.stream(PROMPT, **OPTIONS).final()
    body: dict[str, Any] = json.loads(seen[0].content)
    return body


def measure_sync(
    base_url: str, body: dict[str, Any], pairs: int = PAIRS
) -> tuple[list[float], list[float]]:
    """First-token seconds (raw, ours) over `pairs` interleaved pairs, sync."""
    raw: list[float] = []
    ours: list[float] = []
    url = base_url + "/chat/completions"
    with (
        httpx.Client(timeout=60, limits=_limits()) as http,
        httpx.Client(timeout=None, limits=_limits()) as own,
        Client(base_url=base_url, retry=RetryPolicy(1), http_client=own) as client,
    ):

        def one_raw() -> float:
            first = 0.0
            t = time.perf_counter()
            with http.stream("POST", url, json=body) as response:
                for sse in EventSource(response).iter_sse():
                    if not first and _first_content(sse.data):
                        first = time.perf_counter() - t
            assert first, "no text from llama-server"
            return first

        def one_ours() -> float:
            first = 0.0
            t = time.perf_counter()
            with client.stream(PROMPT, **OPTIONS) as stream:
                for event in stream:
                    if not first and type(event) is TextDelta and event.text:
                        first = time.perf_counter() - t
            assert first, "no text from llama-server"
            return first

        one_raw(), one_ours()  # warm-up
        for i in range(pairs):
            if i % 2 == 0:
                raw.append(one_raw())
                ours.append(one_ours())
            else:
                ours.append(one_ours())
                raw.append(one_raw())
    return raw, ours


def measure_async(
    base_url: str, body: dict[str, Any], pairs: int = PAIRS
) -> tuple[list[float], list[float]]:
    """First-token seconds (raw, ours) over `pairs` interleaved pairs, async."""
    url = base_url + "/chat/completions"

    async def main() -> tuple[list[float], list[float]]:
        raw: list[float] = []
        ours: list[float] = []
        async with (
            httpx.AsyncClient(timeout=60, limits=_limits()) as http,
            httpx.AsyncClient(timeout=None, limits=_limits()) as own,
            AsyncClient(base_url=base_url, retry=RetryPolicy(1), http_client=own) as client,
        ):

            async def one_raw() -> float:
                first = 0.0
                t = time.perf_counter()
                async with http.stream("POST", url, json=body) as response:
                    async for sse in EventSource(response).aiter_sse():
                        if not first and _first_content(sse.data):
                            first = time.perf_counter() - t
                assert first, "no text from llama-server"
                return first

            async def one_ours() -> float:
                first = 0.0
                t = time.perf_counter()
                async with client.stream(PROMPT, **OPTIONS) as stream:
                    async for event in stream:
                        if not first and type(event) is TextDelta and event.text:
                            first = time.perf_counter() - t
                assert first, "no text from llama-server"
                return first

            await one_raw()
            await one_ours()
            for i in range(pairs):
                if i % 2 == 0:
                    raw.append(await one_raw())
                    ours.append(await one_ours())
                else:
                    ours.append(await one_ours())
                    raw.append(await one_raw())
        return raw, ours

    return anyio.run(main)


def _lines(where: str, raw: list[float], ours: list[float]) -> None:
    check(SECTION, f"{where} p50", ("raw httpx-sse", percentile(raw, 50)),
          ("tally", percentile(ours, 50)), unit="ms", scale=1e3, added_under=TARGET)  # fmt: skip
    check(SECTION, f"{where} p95", ("raw httpx-sse", percentile(raw, 95)),
          ("tally", percentile(ours, 95)), unit="ms", scale=1e3)  # fmt: skip


def run() -> None:
    """Print p50 (target) and p95 (information) lines, sync and async, llama-server then
    the loopback server."""
    print(f"{SECTION}: time to first text, interleaved pairs, keep-alive off on both sides")
    warnings.simplefilter("ignore")
    with LlamaServer.start() as server:
        body = _captured_body(server.base_url)
        print(f"  llama-server SmolLM2-135M, {PAIRS} pairs:")
        for mode, measure in (("sync", measure_sync), ("async", measure_async)):
            _lines(f"llama {mode}", *measure(server.base_url, body))
    with LoopbackServer() as loopback:
        base = loopback.url("openai-chat", "chunked", 10) + "/v1"
        print(f"  loopback server, 10-event stream, {LOOPBACK_PAIRS} pairs:")
        for mode, measure in (("sync", measure_sync), ("async", measure_async)):
            _lines(f"loopback {mode}", *measure(base, body, LOOPBACK_PAIRS))
