"""Benchmarks of the browser relay (`tally_client.web`), as ratios measured in one run.

    python -m benchmarks.web [--chunks N] [--rounds R] [--clients C]

1. Per-chunk cost of relaying an `AsyncStream` with `sse_response()` (the whole ASGI response:
   SSE encoding, the disconnect watcher, the ping timer, one `send` per frame to an in-memory
   ASGI server) against iterating the same `AsyncStream` bare, over the same 20,000-chunk
   Chat Completions stream from the replay server. Target: at most 1.5x.
   The same for a sync `Stream` (from `Client`), which the relay iterates in a thread that
   hands events to the event loop through a bounded queue, against iterating it bare in the
   main thread (measured, not a target: the thread hand-over is the cost).
2. Smoothing: text frames sent for 300 deltas about 2 ms apart, without and with
   `smooth=0.05`, and when the first and last text went out (measured, not a target).
3. `--clients` (500) concurrent browser-style SSE clients through the relay served by uvicorn
   (a subprocess, so its memory is its own) on the replay server: every stream completes,
   memory per open stream (the server's RSS with all streams open, minus before, divided by
   the number of streams), and no connection left open afterwards, upstream or downstream.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tally_client import AsyncClient, AsyncStream, Client, RetryPolicy, Stream, TextDelta
from tally_client.testing import ReplayServer, Reply, Scenario

from .streaming import ours_sync

TARGET = 1.5
RECORDING = Path(__file__).parent.parent / "tests" / "recordings" / "openai_chat" / "text.sse"


def sse_body(chunks: int) -> bytes:
    """A Chat Completions stream of `chunks` text chunks, then finish, usage and [DONE]."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    parts = [
        f'data: {head}"choices":[{{"index":0,"delta":{{"content":"tok{i} "}},'
        f'"finish_reason":null}}]}}\n\n'
        for i in range(chunks)
    ]
    parts.append(f'data: {head}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}\n\n')
    usage = {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": chunks + 5}
    parts.append(f'data: {head}"choices":[],"usage":{json.dumps(usage)}}}\n\n')
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


# -- 1. relay overhead per chunk -------------------------------------------------------------


async def bare(client: AsyncClient) -> int:
    n = 0
    async with client.stream("benchmark") as stream:
        async for event in stream:
            if type(event) is TextDelta:
                n += 1
    assert (await stream.final()).state == "complete"
    return n


async def relayed(client: AsyncClient | Client) -> int:
    """The whole ASGI response, sent to an in-memory server that keeps nothing."""
    from tally_client.web import sse_response

    frames = 0
    done = asyncio.Event()
    disconnect = asyncio.Event()

    async def receive() -> Any:
        await disconnect.wait()  # the browser never leaves
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal frames
        if message["type"] == "http.response.body":
            frames += 1
            if not message.get("more_body"):
                done.set()

    stream: AsyncStream | Stream = client.stream("benchmark")
    response = sse_response(stream, protocol="vercel-ai")
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST"}
    await response(scope, receive, send)
    assert done.is_set()
    assert response.result.response.state == "complete"  # type: ignore[attr-defined]
    return frames - 3  # start, finish, final empty body


def per_chunk(chunks: int, rounds: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        with ReplayServer() as server:
            url = server.add(Scenario(Reply(body=sse_body(chunks))))
            base: list[float] = []
            ours: list[float] = []
            async with AsyncClient(base_url=url + "/v1", retry=RetryPolicy(1)) as client:
                await bare(client)  # warm both paths and the connection
                await relayed(client)
                for _ in range(rounds):
                    t = time.perf_counter()
                    assert await bare(client) == chunks
                    base.append((time.perf_counter() - t) / chunks)
                    t = time.perf_counter()
                    assert await relayed(client) == chunks
                    ours.append((time.perf_counter() - t) / chunks)
        return statistics.median(base), statistics.median(ours)

    return asyncio.run(main())


def per_chunk_sync(chunks: int, rounds: int) -> tuple[float, float]:
    """Per-chunk seconds: a sync Stream iterated bare, and relayed (its thread, the bridge)."""
    with ReplayServer() as server:
        url = server.add(Scenario(Reply(body=sse_body(chunks))))
        base: list[float] = []
        ours: list[float] = []
        with Client(base_url=url + "/v1", retry=RetryPolicy(1)) as client:
            ours_sync(client)
            asyncio.run(relayed(client))
            for _ in range(rounds):
                t = time.perf_counter()
                assert ours_sync(client) == chunks
                base.append((time.perf_counter() - t) / chunks)
                t = time.perf_counter()
                assert asyncio.run(relayed(client)) == chunks
                ours.append((time.perf_counter() - t) / chunks)
    return statistics.median(base), statistics.median(ours)


# -- 3. smoothing ----------------------------------------------------------------------------


async def frame_times(client: AsyncClient, smooth: float | None) -> tuple[list[float], str]:
    """Send times (s from the start) of the text frames of one relay, and the text sent."""
    from tally_client.web import sse_response

    times: list[float] = []
    text: list[str] = []
    start = time.perf_counter()

    async def receive() -> Any:
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        body = message.get("body", b"")
        if b'"text-delta"' in body:
            times.append(time.perf_counter() - start)
            for line in body.decode().split("\n"):
                if '"text-delta"' in line:
                    text.append(json.loads(line[6:])["delta"])

    response = sse_response(client.stream("benchmark"), smooth=smooth)
    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    return times, "".join(text)


def smoothing(chunks: int, delay: float, smooth: float) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with ReplayServer() as server:
            url = server.add(Scenario(Reply(body=sse_body(chunks), chunk_delay=delay)))
            async with AsyncClient(base_url=url + "/v1") as client:
                await frame_times(client, None)  # warm-up: connection, first imports
                plain, plain_text = await frame_times(client, None)
                smoothed, smooth_text = await frame_times(client, smooth)
        assert plain_text == smooth_text
        return {
            "plain_frames": len(plain),
            "smooth_frames": len(smoothed),
            "plain_first": plain[0],
            "smooth_first": smoothed[0],
            "plain_end": plain[-1],
            "smooth_end": smoothed[-1],
            # the last frame may follow sooner: what waited is flushed at the end
            "smooth_min_gap": min(b - a for a, b in itertools.pairwise(smoothed[:-1])),
        }

    return asyncio.run(main())


# -- 2. many concurrent browsers -------------------------------------------------------------


def serve(upstream: str, port: int) -> None:
    """Run the relay app under uvicorn (the subprocess side of `concurrent_clients`)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tally_client.web import sse_response

    holder: dict[str, AsyncClient] = {}

    async def chat(request: Request) -> Response:
        if "client" not in holder:
            holder["client"] = AsyncClient(base_url=upstream + "/v1")
        return sse_response(holder["client"].stream("hi"), protocol="vercel-ai")

    app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def browser_connections(port: int) -> int:
    """TCP connections the relay server holds with browsers: local port `port`, any state
    with a socket (not LISTEN, not TIME_WAIT, which has none), from /proc/net/tcp."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] not in ("0A", "06"):
                    count += 1
    return count


def concurrent_clients(clients: int) -> dict[str, Any]:
    paced = Reply.from_file(RECORDING, chunk_delay=0.3)  # each stream lasts about 3.5 s
    expected = "Hello! Café au lait — a classic ☕."
    with ReplayServer() as upstream:
        url = upstream.add(Scenario(paced))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.web", "--serve", url, str(port)],
            cwd=Path(__file__).parent.parent,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(base + "/", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the relay server did not start") from None
                    time.sleep(0.1)
            # one warm-up stream, so the baseline includes imports and the client
            httpx.post(base + "/api/chat", json={}, timeout=30)
            rss_before = rss_bytes(proc.pid)
            peak = [rss_before]

            async def one(http: httpx.AsyncClient) -> str:
                text = ""
                async with http.stream("POST", base + "/api/chat", json={}) as response:
                    async for line in response.aiter_lines():
                        if line.startswith('data: {"type":"text-delta"'):
                            text += json.loads(line[6:])["delta"]
                return text

            async def sample(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_bytes(proc.pid))
                    await asyncio.sleep(0.1)

            async def main() -> list[str | BaseException]:
                limits = httpx.Limits(max_connections=clients + 10)
                stop = asyncio.Event()
                async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                    sampler = asyncio.create_task(sample(stop))
                    results = await asyncio.gather(
                        *(one(http) for _ in range(clients)), return_exceptions=True
                    )
                    stop.set()
                    await sampler
                return results

            t = time.perf_counter()
            results = asyncio.run(main())
            seconds = time.perf_counter() - t
            completed = sum(1 for r in results if r == expected)
            requests = upstream.wait_for_done(url, 10)
            time.sleep(0.5)
            browsers_after = browser_connections(port)
            upstream_idle = upstream.open_connections  # kept alive in the relay's pool
            return {
                "clients": clients,
                "completed": completed,
                "errors": sorted(
                    {type(r).__name__ for r in results if isinstance(r, BaseException)}
                ),
                "seconds": seconds,
                "mib_per_stream": (peak[0] - rss_before) / clients / 2**20,
                "rss_before_mib": rss_before / 2**20,
                "rss_peak_mib": peak[0] / 2**20,
                "upstream_requests": len(requests),
                "upstream_cut_short": sum(r.closed_early for r in requests),
                "upstream_idle_after": upstream_idle,
                "upstream_connections": upstream.connections_opened,
                "browser_connections_after": browsers_after,
            }
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--serve", nargs=2, metavar=("UPSTREAM", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="5,000 chunks, 3 rounds, 100 clients")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.rounds, args.clients = 5_000, 3, 100
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0

    base, ours = per_chunk(args.chunks, args.rounds)
    ratio = ours / base
    print(f"relay per chunk ({args.chunks:,} chunks, median of {args.rounds}):")
    print(f"  AsyncStream, iterated bare        {base * 1e6:7.2f} us")
    print(f"  sse_response(), whole ASGI reply  {ours * 1e6:7.2f} us")
    print(f"  ratio {ratio:.2f}x (target <= {TARGET}x)")
    sync_base, sync_ours = per_chunk_sync(args.chunks, args.rounds)
    print(f"  Stream (sync), iterated bare      {sync_base * 1e6:7.2f} us")
    print(f"  sse_response(Stream), its thread  {sync_ours * 1e6:7.2f} us"
          f"  ({sync_ours / sync_base:.2f}x, measured, no target)")  # fmt: skip

    sm = smoothing(300, 0.002, 0.05)
    print("smoothing (300 deltas about 2 ms apart, smooth=0.05):")
    print(f"  text frames     {sm['plain_frames']} without, {sm['smooth_frames']} with"
          f" (smallest gap with: {sm['smooth_min_gap'] * 1e3:.0f} ms)")  # fmt: skip
    print(f"  first text at   {sm['plain_first'] * 1e3:.1f} ms without,"
          f" {sm['smooth_first'] * 1e3:.1f} ms with; last at {sm['plain_end'] * 1e3:.0f}"
          f" / {sm['smooth_end'] * 1e3:.0f} ms")  # fmt: skip

    load = concurrent_clients(args.clients)
    print(f"{load['clients']} concurrent SSE clients through the relay (uvicorn, replay upstream):")
    print(f"  completed with the full text      {load['completed']} / {load['clients']}"
          f"  in {load['seconds']:.1f} s  errors: {load['errors'] or 'none'}")  # fmt: skip
    print(f"  server memory per open stream     {load['mib_per_stream'] * 1024:7.1f} KiB"
          f"  (RSS {load['rss_before_mib']:.0f} -> {load['rss_peak_mib']:.0f} MiB)")  # fmt: skip
    print(f"  upstream requests                 {load['upstream_requests']}, all answered in full,"
          f" {load['upstream_cut_short']} cut short")  # fmt: skip
    print(f"  upstream connections after        {load['upstream_idle_after']} idle in the relay's"
          f" keep-alive pool (limit 100) of {load['upstream_connections']} opened")  # fmt: skip
    print(f"  browser connections still open    {load['browser_connections_after']}")
    ok = (
        ratio <= TARGET
        and load["completed"] == load["clients"]
        and load["upstream_cut_short"] == 0
        and load["upstream_idle_after"] <= 100
        and load["browser_connections_after"] == 0
    )
    print("PASS" if ok else "OVER TARGET / FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
