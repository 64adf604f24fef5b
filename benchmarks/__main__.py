"""Benchmarks: tally_client's costs as ratios against a baseline measured in the same run.

    make bench        (or: .venv/bin/python -m benchmarks [--chunks N] [--rounds R])

1. Per-chunk cost of `Client.stream()` over a 20,000-chunk OpenAI Chat Completions stream
   from a loopback server, against iterating the same bytes with raw `httpx` + `httpx-sse`
   + `json.loads`; and the same for `AsyncClient.stream()` against `httpx.AsyncClient`.
   Target: at most 1.5x.
2. Import time of `tally_client` against `httpx`, each in a fresh interpreter, with the
   package compiled to bytecode first as `pip install` does (an editable install under
   PYTHONDONTWRITEBYTECODE=1 would otherwise recompile it on every import, while httpx's
   bytecode was written when it was installed). Target: at most 1.5x.

3. `map()` throughput, 429 handling and memory: see `benchmarks/pipelines.py`.

The server sends a prebuilt body with one `sendall`, so the client's parsing dominates. Runs
alternate (baseline, ours, baseline, ...) and medians are compared, so machine load hits both.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import anyio
import httpx
from httpx_sse import EventSource

from tally_client import AsyncClient, Client, RetryPolicy, TextDelta

TARGET = 1.5


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


class LoopbackServer:
    """Answers every request on 127.0.0.1 with one prebuilt SSE response."""

    def __init__(self, body: bytes) -> None:
        self._response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self._sock.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                buf = rest[length:]
                conn.sendall(self._response)


def run_baseline(http: httpx.Client, url: str) -> int:
    n = 0
    with http.stream("POST", url, json={"stream": True}) as response:
        for sse in EventSource(response).iter_sse():
            if sse.data.startswith("[DONE]"):
                break
            json.loads(sse.data)
            n += 1
    return n


def run_ours(client: Client) -> int:
    n = 0
    with client.stream("benchmark") as stream:
        for event in stream:
            if type(event) is TextDelta:
                n += 1
    assert stream.final().state == "complete"
    return n


def per_chunk(chunks: int, rounds: int) -> tuple[float, float]:
    server = LoopbackServer(sse_body(chunks))
    base = f"http://127.0.0.1:{server.port}/v1"
    baseline: list[float] = []
    ours: list[float] = []
    with httpx.Client(timeout=30) as http, Client(base_url=base, retry=RetryPolicy(1)) as client:
        run_baseline(http, base + "/chat/completions")  # warm both paths and the connections
        run_ours(client)
        for _ in range(rounds):
            t = time.perf_counter()
            assert run_baseline(http, base + "/chat/completions") >= chunks
            baseline.append((time.perf_counter() - t) / chunks)
            t = time.perf_counter()
            assert run_ours(client) == chunks
            ours.append((time.perf_counter() - t) / chunks)
    return statistics.median(baseline), statistics.median(ours)


async def arun_baseline(http: httpx.AsyncClient, url: str) -> int:
    n = 0
    async with http.stream("POST", url, json={"stream": True}) as response:
        async for sse in EventSource(response).aiter_sse():
            if sse.data.startswith("[DONE]"):
                break
            json.loads(sse.data)
            n += 1
    return n


async def arun_ours(client: AsyncClient) -> int:
    n = 0
    async with client.stream("benchmark") as stream:
        async for event in stream:
            if type(event) is TextDelta:
                n += 1
    assert (await stream.final()).state == "complete"
    return n


def per_chunk_async(chunks: int, rounds: int) -> tuple[float, float]:
    server = LoopbackServer(sse_body(chunks))
    base = f"http://127.0.0.1:{server.port}/v1"

    async def main() -> tuple[float, float]:
        baseline: list[float] = []
        ours: list[float] = []
        async with (
            httpx.AsyncClient(timeout=30) as http,
            AsyncClient(base_url=base, retry=RetryPolicy(1)) as client,
        ):
            await arun_baseline(http, base + "/chat/completions")
            await arun_ours(client)
            for _ in range(rounds):
                t = time.perf_counter()
                assert await arun_baseline(http, base + "/chat/completions") >= chunks
                baseline.append((time.perf_counter() - t) / chunks)
                t = time.perf_counter()
                assert await arun_ours(client) == chunks
                ours.append((time.perf_counter() - t) / chunks)
        return statistics.median(baseline), statistics.median(ours)

    return anyio.run(main)


def compile_package() -> None:
    """Write tally_client's bytecode, as installing the package would."""
    import compileall
    from pathlib import Path

    import tally_client

    compileall.compile_dir(Path(tally_client.__file__).parent, quiet=1)


def import_seconds(module: str, rounds: int) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(rounds)
    ]  # fmt: skip
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    base_chunk, our_chunk = per_chunk(args.chunks, args.rounds)
    chunk_ratio = our_chunk / base_chunk
    abase_chunk, aour_chunk = per_chunk_async(args.chunks, args.rounds)
    achunk_ratio = aour_chunk / abase_chunk
    compile_package()
    imports_httpx = [import_seconds("httpx", 1) for _ in range(args.rounds * 2)]
    imports_ours = [import_seconds("tally_client", 1) for _ in range(args.rounds * 2)]
    base_import, our_import = statistics.median(imports_httpx), statistics.median(imports_ours)
    import_ratio = our_import / base_import

    print(f"per chunk ({args.chunks:,} chunks, median of {args.rounds}):")
    print(f"  httpx + httpx-sse + json.loads   {base_chunk * 1e6:7.2f} us")
    print(f"  tally_client Client.stream()     {our_chunk * 1e6:7.2f} us")
    print(f"  ratio {chunk_ratio:.2f}x (target <= {TARGET}x)")
    print(f"per chunk, async ({args.chunks:,} chunks, median of {args.rounds}):")
    print(f"  httpx.AsyncClient + httpx-sse    {abase_chunk * 1e6:7.2f} us")
    print(f"  tally_client AsyncClient.stream  {aour_chunk * 1e6:7.2f} us")
    print(f"  ratio {achunk_ratio:.2f}x (target <= {TARGET}x)")
    print(f"import (fresh interpreter, median of {len(imports_ours)}):")
    print(f"  import httpx                     {base_import * 1e3:7.1f} ms")
    print(f"  import tally_client              {our_import * 1e3:7.1f} ms")
    print(f"  ratio {import_ratio:.2f}x (target <= {TARGET}x)")
    ok = max(chunk_ratio, achunk_ratio, import_ratio) <= TARGET
    from .structured import run as structured_output  # partial objects at linear cost

    ok = structured_output(max(1, args.rounds // 2)) and ok
    print("PASS" if ok else "OVER TARGET")
    from benchmarks.pipelines import run as pipelines  # map(): its own module and targets

    ok = pipelines() and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
