"""Structured output while streaming: partial objects at linear cost.

    .venv/bin/python -m benchmarks.structured [--rounds R]     (also run by `make bench`)

A JSON document of 10 KB, 100 KB and 1 MB (a list of people) is streamed from a loopback
server as an OpenAI Chat Completions stream of 8-byte content deltas, framed as OpenAI frames
them, with `schema=list[Person]`. Two consumers, in the same run:

- ours: `for partial in stream.partial_objects(): render(partial)`, as a UI would: one
  incremental parser reads each character once;
- the peers' method: on every delta, re-parse the whole text so far with jiter in partial mode
  (`jiter.from_json(text.encode(), partial_mode="trailing-strings")`, what the openai SDK and
  Instructor do), then render.

Both end with the same strict validation (`stream.final().parsed`). Printed: total seconds per
size (with the same stream read without any parsing, the floor under both), the 1 MB / 100 KB
ratio of ours (linear cost: at most about 12 for 10x the bytes), and
the speed-up over the peers' method at 100 KB (target: at least 20x). The peers' method is not
run at 1 MB: it is quadratic (its time at 100 KB times about 100).

The three consumers run in turn, round after round, on one client and one loopback server, so
load on a shared machine hits all of them alike; each keeps its best round (load only ever
adds time), and the speed-up from the medians is printed beside it for information.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from typing import Any

from pydantic import BaseModel

from tally_client import Client, RetryPolicy, TextDelta

SIZES = {"10 KB": 10_000, "100 KB": 100_000, "1 MB": 1_000_000}
DELTA = 8
RATIO_TARGET = 12.0
SPEEDUP_TARGET = 20.0


class Person(BaseModel):
    name: str
    age: int
    city: str
    bio: str


def document(size: int) -> str:
    """A JSON list of people, about `size` bytes (ASCII, so characters are bytes)."""
    people: list[dict[str, Any]] = []
    length = 2
    i = 0
    while length < size:
        person = {
            "name": f"Person {i}",
            "age": 20 + i % 60,
            "city": ("Seville", "Osaka", "Lagos", "Lima")[i % 4],
            "bio": 'Enjoys long walks, "quoted" words and numbers like 3.14. ' * (1 + i % 3),
        }
        people.append(person)
        length += len(json.dumps(person)) + 2
        i += 1
    return json.dumps(people)


def sse_body(text: str) -> bytes:
    """A Chat Completions stream whose content is `text` in DELTA-byte deltas."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    parts = [
        f'data: {head}"choices":[{{"index":0,"delta":{{"content":{piece}}},'
        f'"finish_reason":null}}]}}\n\n'
        for piece in (json.dumps(text[i : i + DELTA]) for i in range(0, len(text), DELTA))
    ]
    parts.append(f'data: {head}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}\n\n')
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


class Loopback:
    """Serves one prebuilt SSE response to every request on 127.0.0.1 (keep-alive)."""

    def __init__(self, body: bytes) -> None:
        self._response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
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
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                while len(rest) < length:
                    rest += conn.recv(65536)
                buf = rest[length:]
                conn.sendall(self._response)


def render(value: Any) -> int:
    """What a UI does with each partial value, kept cheap: look at its size."""
    return len(value) if isinstance(value, list) else 0


def ours(client: Client) -> tuple[float, int]:
    t = time.perf_counter()
    updates = 0
    with client.stream("people", schema=list[Person]) as stream:
        for partial in stream.partial_objects():
            render(partial)
            updates += 1
    people = stream.final().parsed
    elapsed = time.perf_counter() - t
    assert isinstance(people[0], Person)
    return elapsed, updates


def peers(client: Client) -> tuple[float, int]:
    import jiter

    t = time.perf_counter()
    updates = 0
    text = ""
    with client.stream("people", schema=list[Person]) as stream:
        for event in stream:
            if type(event) is TextDelta:
                text += event.text
                render(jiter.from_json(text.encode(), partial_mode="trailing-strings"))
                updates += 1
    people = stream.final().parsed
    elapsed = time.perf_counter() - t
    assert isinstance(people[0], Person)
    return elapsed, updates


def plain(client: Client) -> float:
    """The same stream with no parsing at all: the floor both consumers stand on."""
    t = time.perf_counter()
    with client.stream("people") as stream:
        for _ in stream:
            pass
    return time.perf_counter() - t


def run(rounds: int = 5) -> bool:
    """Run the case, print its table, and return whether both targets were met."""
    results: dict[str, tuple[float, float | None, float, int]] = {}
    medians: dict[str, tuple[float, float | None]] = {}
    for label, size in SIZES.items():
        text = document(size)
        server = Loopback(sse_body(text))
        with Client(base_url=server.url, retry=RetryPolicy(1)) as client:
            ours(client)  # warm the connection, the schema's TypeAdapter, the code paths
            mine, floor, theirs = [], [], []
            for _ in range(rounds):  # alternate, so machine load hits all of them
                mine.append(ours(client))
                floor.append(plain(client))
                if size <= 100_000:
                    theirs.append(peers(client)[0])
        results[label] = (
            min(t for t, _ in mine),
            min(theirs) if theirs else None,
            min(floor),
            mine[0][1],
        )
        medians[label] = (
            statistics.median(t for t, _ in mine),
            statistics.median(theirs) if theirs else None,
        )
    print(f"structured output, partial objects ({DELTA}-byte deltas, best of {rounds} rounds):")
    print(
        f"  {'size':>7}  {'partial_objects()':>18}  {'jiter every delta':>18}"
        f"  {'stream alone':>13}  updates"
    )
    for label, (mine_s, theirs_s, floor_s, updates) in results.items():
        peer = f"{theirs_s:17.3f}s" if theirs_s is not None else f"{'(quadratic: not run)':>18}"
        print(f"  {label:>7}  {mine_s:17.3f}s  {peer}  {floor_s:12.3f}s  {updates:,}")
    ratio = results["1 MB"][0] / results["100 KB"][0]
    peer_100 = results["100 KB"][1]
    assert peer_100 is not None
    speedup = peer_100 / results["100 KB"][0]
    floor_100 = results["100 KB"][2]
    parse_speedup = (peer_100 - floor_100) / max(results["100 KB"][0] - floor_100, 1e-9)
    print(f"  1 MB / 100 KB: {ratio:.1f}x (linear: target <= {RATIO_TARGET:g}x)")
    mine_median, peer_median = medians["100 KB"]
    print(
        f"  speed-up at 100 KB: {speedup:.1f}x (target >= {SPEEDUP_TARGET:g}x; "
        f"from the medians: {(peer_median or 0.0) / mine_median:.1f}x)"
    )
    print(f"  (parsing cost alone, over the stream alone, at 100 KB: {parse_speedup:.0f}x less)")
    ok = ratio <= RATIO_TARGET and speedup >= SPEEDUP_TARGET
    print("  PASS" if ok else "  OVER TARGET")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    return 0 if run(1 if args.quick else args.rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
