"""What one waiting async stream holds: tracemalloc, tally_client against raw httpx-sse.

    python -m benchmarks.profile_memory [--streams N] [--raw] [--top 25]

The concurrency section's peak heap comes while its streams wait for their response headers,
so this opens N streams (default 100) to a server that reads each request and never answers,
waits until all have sent theirs, and prints the heap they hold per stream, then the biggest
allocation sites per stream: for tally_client grouped by the innermost tally_client line that
led to them (`-` for the event loop's and the task's own), for raw httpx-sse by line. The
server runs in its own process, so only the client's heap is counted.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tracemalloc
import warnings
from collections import defaultdict

import anyio
import httpx

from ._common import ROOT, pool_limits
from ._server import raise_file_limit

SILENT = """
import asyncio, sys
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\\r\\n\\r\\n")
        await reader.read()  # until the client closes
    except Exception:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def _site(trace: tracemalloc.Traceback, raw: bool) -> str:
    frames = list(trace)
    if raw:
        return f"{frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}"
    ours = [f for f in frames if "tally_client" in f.filename]
    if not ours:
        return "-"
    return f"{ours[-1].filename.split('tally_client/')[-1]}:{ours[-1].lineno}"


async def _probe(base: str, streams: int, raw: bool, top: int) -> None:
    if raw:
        from httpx_sse import EventSource

        http = httpx.AsyncClient(timeout=None, limits=pool_limits())

        async def one() -> None:
            url = base + "/v1/chat/completions"
            async with http.stream("POST", url, json={"model": "bench", "stream": True}) as r:
                async for _ in EventSource(r).aiter_sse():
                    pass

    else:
        from tally_client import AsyncClient, RetryPolicy

        client = AsyncClient(base_url=base + "/v1", model="bench", retry=RetryPolicy(1))

        async def one() -> None:
            async with client.stream("benchmark") as stream:
                async for _ in stream:
                    pass

    async with anyio.create_task_group() as tg:  # warm-up: imports, caches
        tg.start_soon(one)
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    gc.collect()
    tracemalloc.start(60)
    before = tracemalloc.take_snapshot()
    start = tracemalloc.get_traced_memory()[0]
    async with anyio.create_task_group() as tg:
        for _ in range(streams):
            tg.start_soon(one)
        await anyio.sleep(1.5)  # every request sent, every stream waiting for its headers
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
        after = tracemalloc.take_snapshot()
        tg.cancel_scope.cancel()
    tracemalloc.stop()
    who = "raw httpx-sse" if raw else "tally_client AsyncClient"
    print(f"{who}: {held / streams:,.0f} bytes per waiting stream ({streams} streams)")
    sites: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sign, snapshot in ((1, after), (-1, before)):
        for stat in snapshot.statistics("traceback"):
            site = sites[_site(stat.traceback, raw)]
            site[0] += sign * stat.size
            site[1] += sign * stat.count
    for name, (size, count) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {size / streams:8,.0f} B  {count / streams:6.2f} objects  {name}")
    await (http.aclose() if raw else client.close())


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_memory", description=__doc__
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--raw", action="store_true", help="raw httpx-sse instead")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    raise_file_limit()
    warnings.simplefilter("ignore")
    server = subprocess.Popen(
        [sys.executable, "-c", SILENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{int(server.stdout.readline())}"
        anyio.run(_probe, base, args.streams, args.raw, args.top)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
