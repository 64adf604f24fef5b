"""Pipelines benchmark: `map()` against a hand-written asyncio.gather + semaphore, same run.

    python -m benchmarks.pipelines [--requests N] [--rounds R] [--memory-items M]

1. Throughput: `AsyncClient.map()` of N requests (default 10,000) on the byte-exact
   ReplayServer, against `asyncio.gather` over `httpx.AsyncClient` posts bounded by an
   `asyncio.Semaphore` of the same size (64), each body parsed with `json.loads`. Rounds
   alternate (baseline, ours, ...) and medians are compared. Target: at least 0.9x.
2. The same N with 5% of requests answered 429 + `retry-after-ms`: map() must finish with
   zero failures; the adaptive limit's trace is summarised (and written to
   `benchmarks/pipelines-trace.json`).
3. Peak memory for M items (default 100,000) with a checkpoint, against 10,000 items: each
   in a fresh interpreter, calls answered in-process by an httpx MockTransport, peak RSS
   (`ru_maxrss`). Memory is bounded when the 100,000-item peak stays near the 10,000 one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

from tally_client import AsyncClient, RetryPolicy
from tally_client.testing import ReplayServer, Reply, Scenario

TARGET = 0.9
CONCURRENCY = 64
RECORDING = Path(__file__).parent.parent / "tests" / "recordings" / "openai_chat" / "text.json"
TRACE_FILE = Path(__file__).parent / "pipelines-trace.json"


def prompts(n: int) -> list[str]:
    return [f"classify item {i}" for i in range(n)]


async def baseline(url: str, items: list[str]) -> int:
    """What a user writes by hand: a semaphore, gather, httpx, json.loads."""
    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(prompt: str) -> str:
            async with sem:
                body = {"model": "default", "messages": [{"role": "user", "content": prompt}]}
                response = await http.post(url + "/chat/completions", json=body)
                response.raise_for_status()
                text: str = json.loads(response.content)["choices"][0]["message"]["content"]
                return text

        results = await asyncio.gather(*(one(p) for p in items))
    return len(results)


async def ours(url: str, items: list[str], retry: RetryPolicy | None = None) -> tuple[int, int]:
    async with AsyncClient(base_url=url, retry=retry) as client:
        result = await client.map(items, concurrency=CONCURRENCY)
    return sum(r is not None for r in result), len(result.errors)


def throughput(n: int, rounds: int) -> tuple[float, float]:
    """Median requests per second: (baseline, map())."""
    items = prompts(n)
    base_rates: list[float] = []
    our_rates: list[float] = []
    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDING)) + "/v1"
        asyncio.run(baseline(url, items[:200]))  # warm both paths
        anyio.run(ours, url, items[:200])
        for _ in range(rounds):
            t = time.perf_counter()
            assert asyncio.run(baseline(url, items)) == n
            base_rates.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            done, failed = anyio.run(ours, url, items)
            assert (done, failed) == (n, 0)
            our_rates.append(n / (time.perf_counter() - t))
    return statistics.median(base_rates), statistics.median(our_rates)


def with_429s(n: int) -> tuple[int, int, float, list[dict[str, object]], int]:
    """map() of n requests where every 20th answer is a 429 with retry-after-ms: 10.

    Returns (done, failed, seconds, trace, requests sent)."""
    good = Reply.from_file(RECORDING)
    limited = Reply.error(
        429,
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
        {"retry-after-ms": "10"},
    )
    replies = [limited if k % 20 == 7 else good for k in range(n + n // 10)]
    items = prompts(n)
    with ReplayServer() as server:
        url = server.add(Scenario(*replies)) + "/v1"

        async def run() -> tuple[int, int, list[dict[str, object]]]:
            async with AsyncClient(base_url=url) as client:
                result = await client.map(items, concurrency=CONCURRENCY)
            trace = [
                {"at": c.at, "limit": c.limit, "reason": c.reason, "pause": c.pause}
                for c in result.limit_trace
            ]
            return sum(r is not None for r in result), len(result.errors), trace

        t = time.perf_counter()
        done, failed, trace = anyio.run(run)
        seconds = time.perf_counter() - t
        sent = len(server.requests(url[: -len("/v1")]))
    return done, failed, seconds, trace, sent


_MEMORY_SCRIPT = """
import json, resource, sys, tempfile, os
import anyio, httpx
from tally_client import AsyncClient
body = open(sys.argv[2], "rb").read()
def handler(request):
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})
async def main(n):
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncClient(base_url="http://bench.invalid/v1", http_client=http) as client:
            result = await client.map((f"item {i}" for i in range(n)), concurrency=64,
                                      checkpoint=os.path.join(tmp, "run.jsonl"))
        assert len(result) == n and not result.errors, result
        assert result.usage.input_tokens == 14 * n
    await http.aclose()
anyio.run(main, int(sys.argv[1]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(items: int) -> int:
    """Peak RSS (KiB) of a fresh interpreter running map() of `items` with a checkpoint."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(items), str(RECORDING)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def summarise(trace: list[dict[str, object]]) -> str:
    limits = [int(str(c["limit"])) for c in trace]
    reasons = [str(c["reason"]) for c in trace]
    return (
        f"{reasons.count('decrease')} decreases, {reasons.count('increase')} increases, "
        f"{reasons.count('pause')} pauses; limit min {min(limits)}, final {limits[-1]}"
    )


def run(requests: int = 10_000, rounds: int = 3, memory_items: int = 100_000) -> bool:
    """Run the three measurements, print them, return True when the targets hold."""
    base, mine = throughput(requests, rounds)
    ratio = mine / base
    done, failed, seconds, trace, sent = with_429s(requests)
    TRACE_FILE.write_text(json.dumps(trace, indent=0))
    small = peak_rss_kib(memory_items // 10)
    large = peak_rss_kib(memory_items)
    print(f"map() throughput ({requests:,} requests on the replay server, median of {rounds}):")
    print(f"  asyncio.gather + Semaphore({CONCURRENCY}) + httpx  {base:8.0f} req/s")
    print(f"  AsyncClient.map(concurrency={CONCURRENCY})          {mine:8.0f} req/s")
    print(f"  ratio {ratio:.2f}x (target >= {TARGET}x)")
    print(f"map() with 5% 429 + retry-after-ms 10 ({requests:,} requests, {sent:,} sent):")
    print(f"  {done:,} done, {failed} failed in {seconds:.1f} s")
    print(f"  adaptive limit: {summarise(trace)} (trace: {TRACE_FILE.name})")
    print("map() peak memory with a checkpoint (fresh interpreter, MockTransport):")
    print(f"  {memory_items // 10:>7,} items   {small / 1024:7.1f} MiB")
    print(f"  {memory_items:>7,} items   {large / 1024:7.1f} MiB ({large / small:.2f}x)")
    ok = ratio >= TARGET and failed == 0 and done == requests
    print("PASS" if ok else "BELOW TARGET")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipelines", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-items", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 requests, one round")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.memory_items = 2_000, 1, 20_000
    return 0 if run(args.requests, args.rounds, args.memory_items) else 1


if __name__ == "__main__":
    raise SystemExit(main())
