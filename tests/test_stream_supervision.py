"""Stream supervision over a byte-exact replay server (OpenAI Chat Completions recordings).

Partial detection, typed errors carrying what arrived, discard-and-retry with a Reset event,
retry-after, time limits, cancellation, proxy buffering, and arbitrary byte splits.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_client import (
    APIStatusError,
    AsyncClient,
    BadRequestError,
    Client,
    FirstTokenTimeout,
    IdleTimeout,
    OverloadedError,
    ProtocolError,
    ProxyBufferingWarning,
    RateLimitError,
    Reset,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamInterrupted,
    TextDelta,
    Timeouts,
    TotalTimeout,
)
from tally_client.testing.replay import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings" / "openai_chat"
TEXT = Reply.from_file(RECORDINGS / "text.sse")
FULL_TEXT = "Hello! Café au lait — a classic ☕."
NO_RETRY = RetryPolicy(max_attempts=1)
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def client_for(server: ReplayServer, *replies: Reply, **kwargs) -> Client:
    url = server.add(Scenario(*replies))
    return Client(base_url=url + "/v1", **kwargs)


def texts_until(body: bytes, offset: int) -> str:
    """The text the first `offset` bytes of a Chat Completions recording carry (whole events)."""
    text = []
    for block in body[:offset].decode("utf-8", "ignore").split("\n\n")[:-1]:
        data = block.removeprefix("data: ")
        if data.startswith("{"):
            for choice in json.loads(data)["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def test_complete_stream(server: ReplayServer) -> None:
    with client_for(server, TEXT) as client:
        response = client.stream("hi").final()
    assert response.text == FULL_TEXT
    assert response.state == "complete"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (14, 11)
    assert len(response.attempts) == 1


@pytest.mark.parametrize("events_kept", [3, 11, 12, 13])
def test_clean_end_before_the_terminal_event_is_partial(
    server: ReplayServer, events_kept: int
) -> None:
    # 12 events = everything up to the finish chunk; 13 = up to the usage chunk, before [DONE].
    cut = TEXT.offset_after_event(events_kept)
    with client_for(server, TEXT.replace(cut_after=cut), retry=NO_RETRY) as client:
        response = client.stream("hi").final()
    assert response.state == "partial"
    assert response.text == texts_until(TEXT.body, cut)
    assert FULL_TEXT.startswith(response.text)
    if events_kept < 12:
        assert response.finish_reason is None


def test_reset_connection_raises_typed_error_with_the_text_so_far(server: ReplayServer) -> None:
    cut = TEXT.offset_after_event(5)
    with client_for(server, TEXT.replace(cut_after=cut, cut="reset"), retry=NO_RETRY) as client:
        stream = client.stream("hi")
        received = []
        with pytest.raises(StreamInterrupted) as info:
            for text in stream.text():
                received.append(text)
    partial = info.value.partial
    assert partial is not None
    assert partial.state == "interrupted"
    assert partial.text == "".join(received) == texts_until(TEXT.body, cut) == "Hello! Café au"
    with pytest.raises(StreamInterrupted):
        stream.final()  # the same error again, not a fake Response


def test_aborted_chunked_body_raises_stream_interrupted(server: ReplayServer) -> None:
    cut = TEXT.offset_after_event(4) + 30  # inside the fifth event
    with (
        client_for(server, TEXT.replace(cut_after=cut, cut="abort"), retry=NO_RETRY) as client,
        pytest.raises(StreamInterrupted) as info,
    ):
        client.stream("hi").final()
    assert info.value.partial is not None
    assert info.value.partial.text == "Hello! Café"


def test_retry_after_a_drop_yields_reset_then_only_the_new_text(server: ReplayServer) -> None:
    cut = TEXT.offset_after_event(6)
    first = TEXT.replace(cut_after=cut, cut="reset")
    with client_for(server, first, TEXT, retry=FAST_RETRY) as client, client.stream("hi") as stream:
        events = list(stream)
    resets = [e for e in events if isinstance(e, Reset)]
    assert len(resets) == 1
    reset = resets[0]
    assert reset.attempt == 2
    assert reset.discarded_text == "Hello! Café au lait"
    assert isinstance(reset.error, StreamInterrupted)
    after = events[events.index(reset) + 1 :]
    assert "".join(e.text for e in after if isinstance(e, TextDelta)) == FULL_TEXT
    response = stream.final()
    assert response.text == FULL_TEXT
    assert response.state == "complete"
    assert [a.number for a in response.attempts] == [1, 2]
    assert isinstance(response.attempts[0].error, StreamInterrupted)
    assert response.attempts[0].text_chars == len("Hello! Café au lait")
    assert response.attempts[1].error is None


def test_text_consumers_see_the_retry_text_after_the_discarded_text(server: ReplayServer) -> None:
    cut = TEXT.offset_after_event(3)
    first = TEXT.replace(cut_after=cut)  # a clean but early end is retried too
    with client_for(server, first, TEXT, retry=FAST_RETRY) as client:
        stream = client.stream("hi")
        shown = "".join(stream.text())
    assert shown == "Hello!" + FULL_TEXT  # documented: text() is append-only
    assert stream.final().text == FULL_TEXT


def test_no_reset_when_the_failed_attempt_showed_nothing(server: ReplayServer) -> None:
    fail = Reply.error(503, {"error": {"message": "busy", "type": "server_error"}})
    with client_for(server, fail, TEXT, retry=FAST_RETRY) as client, client.stream("hi") as stream:
        events = list(stream)
    assert not any(isinstance(e, Reset) for e in events)
    assert stream.final().text == FULL_TEXT


def test_retries_exhausted_raise_the_last_error_with_the_longest_partial(
    server: ReplayServer,
) -> None:
    long_cut = TEXT.replace(cut_after=TEXT.offset_after_event(8), cut="reset")
    short_cut = TEXT.replace(cut_after=TEXT.offset_after_event(3), cut="reset")
    with (
        client_for(server, long_cut, short_cut, retry=RetryPolicy(3, 0.0, 0.0)) as client,
        pytest.raises(StreamInterrupted) as info,
    ):
        client.stream("hi").final()
    error = info.value
    assert len(error.attempts) == 3
    assert error.partial is not None
    assert error.partial.text == texts_until(TEXT.body, TEXT.offset_after_event(8))


def test_429_retry_after_ms_is_honoured(server: ReplayServer) -> None:
    limited = Reply.error(
        429,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
        {"retry-after-ms": "150"},
    )
    with client_for(server, limited, TEXT) as client:
        started = time.monotonic()
        response = client.stream("hi").final()
        elapsed = time.monotonic() - started
    assert response.text == FULL_TEXT
    assert isinstance(response.attempts[0].error, RateLimitError)
    assert response.attempts[0].wait == pytest.approx(0.15)
    assert elapsed >= 0.15


def test_retry_after_beyond_the_cap_is_not_waited(server: ReplayServer) -> None:
    limited = Reply.error(429, {"error": {"message": "slow down"}}, {"retry-after": "3600"})
    url = server.add(Scenario(limited, TEXT))
    with Client(base_url=url + "/v1") as client, pytest.raises(RateLimitError) as info:
        client.complete("hi")
    assert info.value.retry_after == 3600
    assert len(info.value.attempts) == 1
    assert len(server.requests(url)) == 1  # one request: a wait past the cap ends the retries


@pytest.mark.parametrize(
    ("status", "error_type", "retried"),
    [(400, BadRequestError, False), (404, BadRequestError, False), (500, ServerError, True),
     (503, OverloadedError, True), (529, OverloadedError, True)],
)  # fmt: skip
def test_status_errors_are_typed_and_retried_by_status(
    server: ReplayServer, status: int, error_type: type, retried: bool
) -> None:
    fail = Reply.error(status, {"error": {"message": "nope", "type": "x"}})
    url = server.add(Scenario(fail))
    with (
        Client(base_url=url + "/v1", retry=RetryPolicy(2, 0.0, 0.0)) as client,
        pytest.raises(APIStatusError) as info,
    ):
        client.stream("hi").final()
    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert len(server.requests(url)) == (2 if retried else 1)


def test_html_error_page_is_a_retried_server_error_naming_the_page(server: ReplayServer) -> None:
    with (
        client_for(server, Reply.html_error(502), retry=RetryPolicy(2, 0.0, 0.0)) as client,
        pytest.raises(ServerError, match="Bad Gateway") as info,
    ):
        client.stream("hi").final()
    assert info.value.status_code == 502
    assert len(info.value.attempts) == 2


def test_malformed_data_line_is_a_protocol_error_with_the_text_so_far(server: ReplayServer) -> None:
    good = TEXT.body[: TEXT.offset_after_event(3)]
    body = good + b"data: {not json\n\n" + TEXT.body[TEXT.offset_after_event(3) :]
    with (
        client_for(server, Reply(body=body), retry=NO_RETRY) as client,
        pytest.raises(ProtocolError, match="not JSON") as info,
    ):
        client.stream("hi").final()
    assert info.value.partial is not None
    assert info.value.partial.text == "Hello!"


def test_in_stream_error_event(server: ReplayServer) -> None:
    reply = Reply.from_file(RECORDINGS / "error_event.sse")
    with client_for(server, reply, retry=NO_RETRY) as client, pytest.raises(ServerError) as info:
        client.stream("hi").final()
    assert info.value.in_stream
    assert info.value.partial is not None
    assert info.value.partial.text


def test_a_stalled_stream_raises_idle_timeout_quickly(server: ReplayServer) -> None:
    stalled = TEXT.replace(stall_after=TEXT.offset_after_event(4))
    timeouts = Timeouts(idle=0.3, first_token=5.0, total=10.0)
    with client_for(server, stalled, retry=NO_RETRY, timeouts=timeouts) as client:
        started = time.monotonic()
        with pytest.raises(IdleTimeout) as info:
            client.stream("hi").final()
        assert time.monotonic() - started < 2.0
    assert info.value.partial is not None
    assert info.value.partial.text == "Hello! Café"
    assert isinstance(info.value, TimeoutError)


def test_no_first_token_raises_first_token_timeout(server: ReplayServer) -> None:
    slow = TEXT.replace(headers_delay=2.0)
    timeouts = Timeouts(first_token=0.3, idle=5.0, total=10.0)
    with (
        client_for(server, slow, retry=NO_RETRY, timeouts=timeouts) as client,
        pytest.raises(FirstTokenTimeout),
    ):
        client.stream("hi").final()


def test_total_timeout_covers_retries_and_waits(server: ReplayServer) -> None:
    stalled = TEXT.replace(stall_after=TEXT.offset_after_event(2))
    timeouts = Timeouts(idle=5.0, first_token=5.0, total=0.5)
    with client_for(server, stalled, timeouts=timeouts) as client:
        started = time.monotonic()
        with pytest.raises(TotalTimeout):
            client.stream("hi").final()
        assert time.monotonic() - started < 2.0


def test_closing_a_stream_closes_the_connection_and_keeps_the_text(server: ReplayServer) -> None:
    paced = TEXT.replace(chunk_delay=0.2)
    url = server.add(Scenario(paced))
    with Client(base_url=url + "/v1") as client:
        with client.stream("hi") as stream:
            for event in stream:
                if isinstance(event, TextDelta):
                    break  # leaving the loop and the block cancels the call
        record = server.wait_for_disconnect(url, timeout=2.0)
    assert record.closed_early
    response = stream.final()
    assert response.state == "cancelled"
    assert response.text == "Hello"


def test_breaking_out_of_text_closes_the_connection(server: ReplayServer) -> None:
    url = server.add(Scenario(TEXT.replace(chunk_delay=0.2)))
    with Client(base_url=url + "/v1") as client:
        stream = client.stream("hi")
        for _ in stream.text():
            break
        assert server.wait_for_disconnect(url, timeout=2.0).closed_early
    assert stream.final().state == "cancelled"


def test_cancelling_the_async_task_closes_the_connection(server: ReplayServer) -> None:
    url = server.add(Scenario(TEXT.replace(chunk_delay=0.2)))

    async def main() -> str:
        async with AsyncClient(base_url=url + "/v1") as client:
            stream = client.stream("hi")
            with anyio.move_on_after(0.5):
                async for _ in stream.text():
                    pass
            record = await server.async_wait_for_disconnect(url, timeout=2.0)
            assert record.closed_early
            return (await stream.final()).state

    assert anyio.run(main) == "cancelled"


def test_a_stream_is_iterated_once(server: ReplayServer) -> None:
    with client_for(server, TEXT) as client:
        stream = client.stream("hi")
        list(stream)
        with pytest.raises(StreamError, match="already iterated"):
            list(stream)
        assert stream.final().text == FULL_TEXT


def test_proxy_buffering_is_detected_and_named(server: ReplayServer) -> None:
    # The whole body arrives in one burst after a long silence: a buffering proxy's signature.
    buffered = TEXT.replace(stall_after=0, stall_seconds=0.6)
    with client_for(server, buffered) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = client.stream("hi").final()
    assert response.metrics.buffered
    assert any(issubclass(w.category, ProxyBufferingWarning) and "proxy" in str(w.message)
               for w in caught)  # fmt: skip
    with client_for(server, TEXT.replace(chunk_delay=0.01)) as client:
        assert not client.stream("hi").final().metrics.buffered


def test_atomic_calls_are_retried_too(server: ReplayServer) -> None:
    body = Reply.from_file(RECORDINGS / "text.json")
    busy = Reply.error(503, {"error": {"message": "overloaded"}})
    with client_for(server, busy, body, retry=FAST_RETRY) as client:
        response = client.complete("hi")
    assert response.state == "complete"
    assert len(response.attempts) == 2


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=8))
def test_random_byte_splits_give_the_same_events(server: ReplayServer, sizes: list[int]) -> None:
    with client_for(server, TEXT.replace(split=sizes)) as client, client.stream("hi") as stream:
        events = list(stream)
    with client_for(server, TEXT) as client, client.stream("hi") as stream:
        reference = list(stream)
    assert events == reference


def test_response_behaves_alike_on_both_twins(server: ReplayServer) -> None:
    # `.response` is a property: it cannot wait on an event loop, so neither twin waits.
    url = server.add(Scenario(TEXT))
    with Client(base_url=url + "/v1") as client:
        stream = client.stream("hi")
        with pytest.raises(StreamError, match="has not ended"):
            _ = stream.response
        assert stream.final().text == stream.response.text

    async def main() -> None:
        async with AsyncClient(base_url=url + "/v1") as client:
            astream = client.stream("hi")
            with pytest.raises(StreamError, match="has not ended"):
                _ = astream.response
            assert (await astream.final()).text == astream.response.text

    anyio.run(main)
