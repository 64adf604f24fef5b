"""close() stops a call in every phase: provider x phase x sync/async, over the replay server.

For each phase the call is blocked in (connecting, waiting for headers, reading the body,
waiting to retry), another thread or task calls close() and we check, on both sides of the
wire: close() returns at once, no request leaves after it (the server's request count), the
server sees the disconnect, the consumer's loop ends, and the Response is "cancelled" with
exactly the text the consumer was shown.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tally_client import AsyncClient, Client, Response, RetryPolicy, TextDelta, Timeouts
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"
TIMEOUTS = Timeouts(connect=30, first_token=30, idle=30, total=60)
RETRY = RetryPolicy(max_attempts=3, max_retry_after=60)
PROMPT = 2.0  # seconds: "at once" against 30 s time limits, with room for a starved 2-core machine


@dataclass(frozen=True)
class Wire:
    name: str
    protocol: str
    path: str
    model: str
    stall_event: int  # the text recording stalls after this event: output shown by then

    def reply(self, **faults: object) -> Reply:
        return Reply.from_file(RECORDINGS / self.name / "text.sse", **faults)

    def url(self, scenario_url: str) -> str:
        return scenario_url + self.path


WIRES = [
    Wire("openai_chat", "openai-chat", "/v1", "gpt-4o-mini", 3),
    Wire("openai_responses", "openai-responses", "/v1", "gpt-5", 5),
    Wire("anthropic", "anthropic", "", "claude-sonnet-4-5", 4),
    Wire("gemini", "gemini", "", "gemini-2.5-flash", 1),
]
IDS = [w.name for w in WIRES]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def sync_client(wire: Wire, base_url: str) -> Client:
    return Client(
        base_url=base_url, protocol=wire.protocol, model=wire.model, api_key="test-key",
        timeouts=TIMEOUTS, retry=RETRY,
    )  # fmt: skip


def async_client(wire: Wire, base_url: str) -> AsyncClient:
    return AsyncClient(
        base_url=base_url, protocol=wire.protocol, model=wire.model, api_key="test-key",
        timeouts=TIMEOUTS, retry=RETRY,
    )  # fmt: skip


def phase_reply(wire: Wire, phase: str) -> Reply | Scenario:
    """A scenario that keeps the call blocked in `phase` until the client gives up."""
    if phase == "headers":
        return wire.reply(headers_delay=30)
    if phase == "reading":  # output shown, then the stream stalls
        text = wire.reply()
        return text.replace(stall_after=text.offset_after_event(wire.stall_event))
    assert phase == "backoff"  # a 429 asking for a wait, then a good answer
    limited = Reply.error(429, {"error": {"message": "slow down"}}, {"retry-after": "30"})
    return Scenario(limited, wire.reply())


def blocked(server: ReplayServer, url: str, phase: str) -> None:
    """Wait until the call is blocked in `phase` (the server's view of it)."""
    server.wait_for_requests(url, 1, timeout=10)
    if phase == "backoff":
        server.wait_for_done(url, timeout=10)  # the 429 went out whole
    time.sleep(0.3)  # let the client reach its blocking point


def check_server_side(server: ReplayServer, url: str, phase: str) -> None:
    if phase != "backoff":  # a 429 is sent whole: there is no response to walk away from
        assert server.wait_for_disconnect(url, timeout=5).closed_early
    time.sleep(0.3)  # a request that would leave after close() has time to arrive
    assert len(server.requests(url)) == 1, "a request left after close()"


@pytest.mark.parametrize("phase", ["headers", "reading", "backoff"])
@pytest.mark.parametrize("wire", WIRES, ids=IDS)
def test_sync_close_from_another_thread(server: ReplayServer, wire: Wire, phase: str) -> None:
    url = server.add(phase_reply(wire, phase))
    shown: list[str] = []
    ended = threading.Event()
    with sync_client(wire, wire.url(url)) as client:
        stream = client.stream("hi")

        def consume() -> None:
            for event in stream:
                if isinstance(event, TextDelta):
                    shown.append(event.text)
            ended.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        blocked(server, url, phase)
        started = time.monotonic()
        stream.close()
        assert time.monotonic() - started < PROMPT, "close() did not return at once"
        assert ended.wait(PROMPT * 4), "the consumer's loop did not end"
        consumer.join(1)
        response = stream.final()
    check_server_side(server, url, phase)
    assert_cancelled(response, shown, phase)


@pytest.mark.parametrize("phase", ["headers", "reading", "backoff"])
@pytest.mark.parametrize("wire", WIRES, ids=IDS)
def test_async_close_from_another_task(server: ReplayServer, wire: Wire, phase: str) -> None:
    url = server.add(phase_reply(wire, phase))
    shown: list[str] = []

    async def main() -> tuple[Response, float, float]:
        async with async_client(wire, wire.url(url)) as client:
            stream = client.stream("hi")
            ended = anyio.Event()

            async def consume() -> None:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        shown.append(event.text)
                ended.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(consume)
                await anyio.to_thread.run_sync(blocked, server, url, phase)
                started = time.monotonic()
                await stream.close()
                close_took = time.monotonic() - started
                with anyio.fail_after(PROMPT * 4):
                    await ended.wait()
                loop_took = time.monotonic() - started
            return await stream.final(), close_took, loop_took

    response, close_took, loop_took = anyio.run(main)
    assert close_took < PROMPT, "close() did not return at once"
    assert loop_took < PROMPT * 4
    check_server_side(server, url, phase)
    assert_cancelled(response, shown, phase)


def assert_cancelled(response: Response, shown: list[str], phase: str) -> None:
    assert response.state == "cancelled"
    assert response.text == "".join(shown)
    if phase == "reading":
        assert shown, "the reading phase shows output before the stall"


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port where connecting hangs: a listener whose accept queue is full (Linux drops
    further SYNs, so connect() blocks until its timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # a non-blocking connect is in progress
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


def test_async_close_while_connecting(unanswered_port: int) -> None:
    async def main() -> tuple[Response, float, float]:
        url = f"http://127.0.0.1:{unanswered_port}/v1"
        async with AsyncClient(base_url=url, timeouts=TIMEOUTS) as client:
            stream = client.stream("hi")
            ended = anyio.Event()

            async def consume() -> None:
                async for _ in stream:
                    pass
                ended.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(consume)
                await anyio.sleep(0.5)
                assert not ended.is_set(), "the connect should still be pending"
                started = time.monotonic()
                await stream.close()
                close_took = time.monotonic() - started
                with anyio.fail_after(PROMPT * 4):
                    await ended.wait()
                loop_took = time.monotonic() - started
            return await stream.final(), close_took, loop_took

    response, close_took, loop_took = anyio.run(main)
    assert response.state == "cancelled"
    assert close_took < PROMPT
    assert loop_took < PROMPT * 4


def test_sync_close_while_connecting(unanswered_port: int) -> None:
    url = f"http://127.0.0.1:{unanswered_port}/v1"
    ended = threading.Event()
    with Client(base_url=url, timeouts=TIMEOUTS) as client:
        stream = client.stream("hi")

        def consume() -> None:
            for _ in stream:
                pass
            ended.set()

        threading.Thread(target=consume, daemon=True).start()
        time.sleep(0.5)
        assert not ended.is_set(), "the connect should still be pending"
        started = time.monotonic()
        stream.close()
        assert time.monotonic() - started < PROMPT
        assert ended.wait(PROMPT * 4), "the consumer's loop did not end"
    assert stream.final().state == "cancelled"
