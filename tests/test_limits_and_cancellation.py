"""Time limits follow the stream's phases, and closing works from anywhere.

Regression tests for a review of the supervisor: the idle limit must not shrink to the
first-token limit, keep-alive comments must not defeat the first-token or total limits, a
slow consumer is not a stalled stream, and a stream closes when its loop is left, when it is
closed from another thread, and before it was ever read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ConfigurationError,
    FirstTokenTimeout,
    IdleTimeout,
    PoolTimeout,
    ProtocolError,
    RetryPolicy,
    StreamError,
    TextDelta,
    Timeouts,
    TotalTimeout,
)
from tally_client.testing import ReplayServer, Reply, Scenario

TEXT = Reply.from_file(Path(__file__).parent / "recordings" / "openai_chat" / "text.sse")
FULL_TEXT = "Hello! Café au lait — a classic ☕."
ONCE = RetryPolicy(max_attempts=1)
PINGS = b": keep-alive\n\n" * 40


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def client_for(url: str, timeouts: Timeouts) -> Client:
    return Client(base_url=url + "/v1", retry=ONCE, timeouts=timeouts)


def test_idle_limit_is_not_cut_to_the_first_token_limit(server: ReplayServer) -> None:
    # Output at once, then a 1.2 s silence: within idle (3 s), past first_token (0.5 s).
    gap = TEXT.replace(stall_after=TEXT.offset_after_event(4), stall_seconds=1.2)
    with client_for(server.add(gap), Timeouts(first_token=0.5, idle=3.0, total=10)) as client:
        response = client.stream("hi").final()
    assert response.text == FULL_TEXT
    assert response.state == "complete"


@pytest.mark.filterwarnings("ignore::tally_client.ProxyBufferingWarning")  # a burst, by design
def test_idle_does_not_apply_before_the_first_token(server: ReplayServer) -> None:
    # Headers, then 1.2 s without a byte before the first token: first_token (3 s) governs.
    quiet = TEXT.replace(stall_after=0, stall_seconds=1.2, chunk_delay=0.0)
    with client_for(server.add(quiet), Timeouts(first_token=3.0, idle=0.5, total=10)) as client:
        assert client.stream("hi").final().state == "complete"


@pytest.mark.filterwarnings("ignore::tally_client.ProxyBufferingWarning")
def test_keep_alive_comments_do_not_defeat_the_first_token_limit(server: ReplayServer) -> None:
    pings = Reply(body=PINGS + TEXT.body, chunk_delay=0.05)  # 2 s of pings, then the answer
    with client_for(server.add(pings), Timeouts(first_token=0.6, idle=5.0, total=10)) as client:
        started = time.monotonic()
        with pytest.raises(FirstTokenTimeout):
            client.stream("hi").final()
        assert time.monotonic() - started < 1.5


def test_keep_alive_comments_do_not_defeat_the_total_limit(server: ReplayServer) -> None:
    head = TEXT.body[: TEXT.offset_after_event(3)]
    trickle = Reply(body=head + PINGS + TEXT.body[len(head) :], chunk_delay=0.05)
    with client_for(server.add(trickle), Timeouts(first_token=5, idle=5, total=0.8)) as client:
        started = time.monotonic()
        with pytest.raises(TotalTimeout) as info:
            client.stream("hi").final()
        assert time.monotonic() - started < 1.6
    assert info.value.partial is not None
    assert info.value.partial.text == "Hello!"


def test_a_trickled_atomic_body_respects_the_total_limit(server: ReplayServer) -> None:
    body = Reply.from_file(Path(__file__).parent / "recordings" / "openai_chat" / "text.json")
    slow = body.replace(split=[20], split_delay=0.2)
    with client_for(server.add(slow), Timeouts(total=0.7)) as client:
        started = time.monotonic()
        with pytest.raises(TotalTimeout):
            client.complete("hi")
        assert time.monotonic() - started < 1.5


def test_a_slow_consumer_is_not_a_stalled_stream(server: ReplayServer) -> None:
    with client_for(server.add(TEXT), Timeouts(idle=0.2, total=10)) as client:
        with client.stream("hi") as stream:
            for event in stream:
                if isinstance(event, TextDelta) and event.text == "!":
                    time.sleep(0.6)  # the consumer is busy; the server is not silent
        assert stream.final().text == FULL_TEXT


def test_async_idle_and_first_token_limits(server: ReplayServer) -> None:
    stall = server.add(TEXT.replace(stall_after=TEXT.offset_after_event(4)))
    gap = server.add(TEXT.replace(stall_after=TEXT.offset_after_event(4), stall_seconds=1.0))

    async def main() -> tuple[str, float]:
        limits = Timeouts(first_token=0.3, idle=2.0, total=10)
        async with AsyncClient(base_url=gap + "/v1", retry=ONCE, timeouts=limits) as client:
            text = (await client.stream("hi").final()).text  # 1 s gap: within idle
        limits = Timeouts(first_token=5, idle=0.3, total=10)
        async with AsyncClient(base_url=stall + "/v1", retry=ONCE, timeouts=limits) as client:
            started = time.monotonic()
            with pytest.raises(IdleTimeout):
                await client.stream("hi").final()
            return text, time.monotonic() - started

    text, waited = anyio.run(main)
    assert text == FULL_TEXT
    assert waited < 1.5


def test_breaking_out_of_the_event_loop_closes_the_connection(server: ReplayServer) -> None:
    url = server.add(Scenario(TEXT.replace(chunk_delay=0.2)))
    with Client(base_url=url + "/v1") as client:
        stream = client.stream("hi")
        for _ in stream:
            break  # no `with`, no close(): leaving the loop is enough
        assert server.wait_for_disconnect(url, timeout=2.0).closed_early
        assert stream.final().state == "cancelled"


def test_close_from_another_thread_stops_the_stream(server: ReplayServer) -> None:
    url = server.add(Scenario(TEXT.replace(chunk_delay=0.3)))
    with Client(base_url=url + "/v1") as client:
        stream = client.stream("hi")
        threading.Timer(0.5, stream.close).start()
        started = time.monotonic()
        pieces = list(stream.text())
        assert time.monotonic() - started < 1.5  # the whole stream would take about 4 s
    response = stream.final()
    assert response.state == "cancelled"
    assert "".join(pieces) == response.text


def test_close_before_reading_sends_nothing(server: ReplayServer) -> None:
    url = server.add(Scenario(TEXT))
    with Client(base_url=url + "/v1") as client:
        stream = client.stream("hi")
        stream.close()
        assert stream.final().state == "cancelled"
        with pytest.raises(StreamError, match="closed"):
            list(stream)
    assert server.requests(url) == []


@pytest.mark.parametrize(
    "chunk",
    [b'{"choices":[null]}', b'{"choices":[{"delta":"x"}]}', b'{"choices":{"a":1}}',
     b'{"choices":[],"usage":[1]}'],
)  # fmt: skip
def test_json_of_the_wrong_shape_is_a_protocol_error(server: ReplayServer, chunk: bytes) -> None:
    head = TEXT.body[: TEXT.offset_after_event(3)]
    url = server.add(Reply(body=head + b"data: " + chunk + b"\n\n" + TEXT.body[len(head) :]))
    with Client(base_url=url + "/v1", retry=ONCE) as client:
        stream = client.stream("hi")
        with pytest.raises(ProtocolError, match="unexpected shape") as info:
            stream.final()
        with pytest.raises(ProtocolError):
            stream.final()  # the error again, never a "cancelled" Response
    assert info.value.partial is not None
    assert info.value.partial.text == "Hello!"


@pytest.mark.parametrize("url", ["127.0.0.1:8080/v1", "ftp://host/v1", "http://[bad/v1"])
def test_a_bad_base_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        Client(base_url=url)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
def test_sync_time_limits_work_after_fork(server: ReplayServer) -> None:
    # gunicorn --preload and Celery prefork fork after the parent used the client: the
    # watchdog thread does not exist in the child, and the child must start its own.
    stall = server.add(TEXT.replace(stall_after=TEXT.offset_after_event(4)))
    limits = Timeouts(first_token=5, idle=0.3, total=10)
    with client_for(stall, limits) as client, pytest.raises(IdleTimeout):
        client.stream("hi").final()  # the parent's watchdog thread is running now
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 1
        try:
            started = time.monotonic()
            with client_for(stall, limits) as client:
                client.stream("hi").final()
        except IdleTimeout:
            code = 0 if time.monotonic() - started < 3 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the idle limit did not fire in the child"


def test_pool_exhaustion_is_its_own_error_naming_the_limit(server: ReplayServer) -> None:
    stall = server.add(TEXT.replace(stall_after=TEXT.offset_after_event(4)))
    limits = Timeouts(connect=0.5, first_token=5, idle=30, total=30)
    with Client(base_url=stall + "/v1", retry=ONCE, timeouts=limits, max_connections=2) as client:
        held = [client.stream("hi") for _ in range(2)]
        readers = [iter(stream) for stream in held]  # kept: a dropped iterator cancels
        for reader in readers:
            next(reader)  # each open stream holds a connection
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="max_connections") as info:
            client.stream("hi").final()
        assert time.monotonic() - started < 2.0
        assert not info.value.retryable
        for stream in held:
            stream.close()
    with pytest.raises(ConfigurationError, match="max_connections"):
        Client(base_url=stall + "/v1", max_connections=0)
