"""Where a stream's per-chunk time goes: cProfile over the streaming section's case.

    python -m benchmarks.profile_stream [--sync] [--format anthropic] [--raw] [--top 25]

Runs 3 streams of 20,000 events (chunked framing, loopback server) under cProfile after one
warm-up stream and prints the top functions by own time, in microseconds per chunk. cProfile
slows call-heavy code several-fold, so read the shares, not the absolute values; measure
changes with `python -m benchmarks streaming`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import warnings

import anyio
import httpx

from tally_client import AsyncClient, Client, RetryPolicy

from ._common import pool_limits
from ._server import FORMATS, LoopbackServer
from .streaming import PROTOCOL_PATH, _client_kwargs, ours_async, ours_sync, raw_async, raw_sync

EVENTS = 20_000
ROUNDS = 3


def profile(fmt: str, sync: bool, raw: bool) -> cProfile.Profile:
    """Profile ROUNDS streams of one case."""
    prof = cProfile.Profile()
    with LoopbackServer() as server:
        base = server.url(fmt, "chunked", EVENTS)
        url = base + PROTOCOL_PATH[fmt]
        kwargs = _client_kwargs(fmt, base)
        if sync:
            with (
                httpx.Client(timeout=None, limits=pool_limits()) as http,
                Client(retry=RetryPolicy(1), **kwargs) as client,  # type: ignore[arg-type]
            ):
                for i in range(ROUNDS + 1):
                    if i == 1:
                        prof.enable()
                    raw_sync(http, url) if raw else ours_sync(client)
                prof.disable()
            return prof

        async def main() -> None:
            async with (
                httpx.AsyncClient(timeout=None, limits=pool_limits()) as http,
                AsyncClient(retry=RetryPolicy(1), **kwargs) as client,  # type: ignore[arg-type]
            ):
                for i in range(ROUNDS + 1):
                    if i == 1:
                        prof.enable()
                    await (raw_async(http, url) if raw else ours_async(client))
                prof.disable()

        anyio.run(main)
    return prof


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_stream")
    parser.add_argument("--sync", action="store_true", help="the sync client (default async)")
    parser.add_argument("--format", choices=FORMATS, default="openai-chat")
    parser.add_argument("--raw", action="store_true", help="profile the raw httpx-sse baseline")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    stats = pstats.Stats(profile(args.format, args.sync, args.raw))
    chunks = EVENTS * ROUNDS
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for _, v in rows)
    print(f"{total / chunks * 1e6:.2f} us per chunk under cProfile; top by own time:")
    print(f"{'own us/chunk':>12} {'cum us/chunk':>12} {'calls/chunk':>11}  function")
    for (path, line, name), (_, calls, own, cum, _) in rows[: args.top]:
        where = f"{path.rsplit('site-packages/', 1)[-1]}:{line}" if line else path
        print(f"{own / chunks * 1e6:12.2f} {cum / chunks * 1e6:12.2f} {calls / chunks:11.2f}  "
              f"{name} ({where})")  # fmt: skip


if __name__ == "__main__":
    main()
