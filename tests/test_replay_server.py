"""Tests of the replay server itself (tally_client.testing.replay), driven with plain httpx."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"
ALL_RECORDINGS = sorted(p for p in RECORDINGS.glob("*/*") if p.suffix in (".sse", ".json"))
SSE_RECORDINGS = [p for p in ALL_RECORDINGS if p.suffix == ".sse"]
CHAT_TEXT = RECORDINGS / "openai_chat" / "text.sse"
EXPECTED_TEXT = "Hello! Café au lait — a classic ☕."


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """One server shared by the tests that only look at their own scenario."""
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def fresh_server() -> Iterator[ReplayServer]:
    """A server of its own, for tests that count connections or disconnects."""
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def _collect(response: httpx.Response | Iterator[bytes], into: bytearray) -> None:
    for chunk in response.iter_raw() if isinstance(response, httpx.Response) else response:
        into += chunk


# -- recordings and byte-exact replay ---------------------------------------------------------


def test_all_recordings_present() -> None:
    names = {_id(p) for p in ALL_RECORDINGS}
    for provider, scenarios in {
        "openai_chat": "text tool_call length refusal error_event",
        "openai_responses": "text tool_call incomplete content_filter error_event failed",
        "anthropic": "text tool_call thinking length refusal error_event",
        "gemini": "text tool_call length safety blocked_prompt thinking error_event",
    }.items():
        for scenario in scenarios.split():
            assert f"{provider}/{scenario}.sse" in names
        assert f"{provider}/text.json" in names
        assert f"{provider}/tool_call.json" in names


@pytest.mark.parametrize("path", SSE_RECORDINGS, ids=_id)
def test_recording_framing(path: Path) -> None:
    body = path.read_bytes()
    body.decode("utf-8")  # valid UTF-8 throughout
    if path.parent.name == "gemini":
        assert body.endswith(b"}\r\n\r\n")
        assert b"\n" not in body.replace(b"\r\n", b"")
        events = body.split(b"\r\n\r\n")[:-1]
        for event in events:
            assert event.startswith(b"data: {"), event[:40]
            json.loads(event[len(b"data: ") :])
        assert b'": ' in body  # Google's spacing
    else:
        assert b"\r" not in body
        assert body.endswith(b"\n\n")
        events = body.split(b"\n\n")[:-1]
        for event in events:
            lines = event.split(b"\n")
            data = lines[-1]
            assert data.startswith(b"data: ")
            if path.parent.name in ("anthropic", "openai_responses"):
                assert lines[0].startswith(b"event: ")
                name = lines[0][len(b"event: ") :].decode()
                assert json.loads(data[len(b"data: ") :])["type"] == name
            elif data != b"data: [DONE]":
                json.loads(data[len(b"data: ") :])
    if path.parent.name == "openai_chat":
        assert body.endswith(b"data: [DONE]\n\n") == (path.stem != "error_event")


@pytest.mark.parametrize("path", ALL_RECORDINGS, ids=_id)
def test_serves_recording_byte_exact(
    server: ReplayServer, client: httpx.Client, path: Path
) -> None:
    url = server.add(Reply.from_file(path))
    response = client.post(url + "/v1/anything", json={"stream": True})
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    if path.suffix == ".sse":
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
    else:
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(path.read_bytes())
        json.loads(response.content)


def test_successive_replies_then_last_repeats(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(
        Scenario(
            Reply.error(429, {"error": {"type": "rate_limit_exceeded"}}, {"retry-after-ms": "7"}),
            Reply.from_file(CHAT_TEXT),
        )
    )
    first = client.post(url + "/v1/chat/completions", json={})
    assert first.status_code == 429
    assert first.headers["retry-after-ms"] == "7"
    assert first.json() == {"error": {"type": "rate_limit_exceeded"}}
    for _ in range(2):
        again = client.post(url + "/v1/chat/completions", json={})
        assert again.status_code == 200
        assert again.content == CHAT_TEXT.read_bytes()
    assert [r.attempt for r in server.requests(url)] == [0, 1, 2]


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "content-length", "close"])
def test_cut_clean_looks_complete(server: ReplayServer, client: httpx.Client, framing: str) -> None:
    reply = Reply.from_file(CHAT_TEXT, framing=framing, cut_after=777)
    url = server.add(reply)
    response = client.get(url + "/v1/chat/completions")
    assert response.content == CHAT_TEXT.read_bytes()[:777]
    if framing == "content-length":
        assert response.headers["content-length"] == "777"
    if framing == "close":
        assert response.headers["connection"] == "close"
        assert "content-length" not in response.headers


def test_close_framing_full_body(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(Reply.from_file(CHAT_TEXT, framing="close"))
    response = client.get(url)
    assert response.content == CHAT_TEXT.read_bytes()
    assert "transfer-encoding" not in response.headers


@pytest.mark.parametrize("framing", ["chunked", "content-length", "close"])
def test_cut_reset_raises_read_error(
    server: ReplayServer, client: httpx.Client, framing: str
) -> None:
    reply = Reply.from_file(CHAT_TEXT, framing=framing)
    url = server.add(reply.replace(cut_after=reply.offset_after_event(2), cut="reset"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(url)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_cut_abort_raises_protocol_error(
    server: ReplayServer, client: httpx.Client, framing: str
) -> None:
    reply = Reply.from_file(CHAT_TEXT, framing=framing)
    cut = reply.offset_after_event(2)
    url = server.add(reply.replace(cut_after=cut, cut="abort"))
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", url) as response,
    ):
        _collect(response, received)
    assert bytes(received) == CHAT_TEXT.read_bytes()[:cut]


def test_stall_trips_read_timeout_and_server_notices(fresh_server: ReplayServer) -> None:
    reply = Reply.from_file(CHAT_TEXT)
    stall_at = reply.offset_after_event(3)
    url = fresh_server.add(reply.replace(stall_after=stall_at))
    received = bytearray()
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
        c.stream("GET", url) as response,
    ):
        _collect(response, received)
    assert bytes(received) == CHAT_TEXT.read_bytes()[:stall_at]
    record = fresh_server.wait_for_disconnect(url, timeout=2.0)
    assert record.closed_early
    fresh_server.wait_for_idle(timeout=2.0)
    assert fresh_server.disconnects == 1


def test_stall_at_end_before_terminator(server: ReplayServer) -> None:
    body = CHAT_TEXT.read_bytes()
    url = server.add(Reply.from_file(CHAT_TEXT, stall_after=len(body)))
    received = bytearray()
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
        c.stream("GET", url) as response,
    ):
        _collect(response, received)
    assert bytes(received) == body


def test_finite_stall_then_continues(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(Reply.from_file(CHAT_TEXT, stall_after=10, stall_seconds=0.05))
    assert client.get(url).content == CHAT_TEXT.read_bytes()


@pytest.mark.parametrize("framing", ["chunked", "content-length", "close"])
def test_split_delivers_identical_bytes(
    server: ReplayServer, client: httpx.Client, framing: str
) -> None:
    body = CHAT_TEXT.read_bytes()
    sizes = [1, 2, 3, 5, 8, 13]
    boundaries, pos = [], 0
    while pos < len(body):
        for size in sizes:
            pos += size
            boundaries.append(pos)
    # The sizes really do break a UTF-8 character somewhere (a continuation byte follows).
    assert any(b < len(body) and body[b] & 0xC0 == 0x80 for b in boundaries)
    url = server.add(Reply.from_file(CHAT_TEXT, framing=framing, split=sizes, split_delay=0.0))
    assert client.get(url).content == body


def test_split_with_delay_and_stall(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(
        Reply.from_file(CHAT_TEXT, split=[97], split_delay=0.001, stall_after=150, stall_seconds=0)
    )
    assert client.get(url).content == CHAT_TEXT.read_bytes()


def test_chunk_delay_paces_events(server: ReplayServer, client: httpx.Client) -> None:
    path = RECORDINGS / "gemini" / "text.sse"
    url = server.add(Reply.from_file(path, chunk_delay=0.01))
    started = time.monotonic()
    assert client.get(url).content == path.read_bytes()
    assert time.monotonic() - started >= 0.02  # three events, two pauses


def test_drop_connection_before_response(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(Scenario(Reply.disconnect(), Reply.disconnect(reset=True)))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.get(url)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.get(url)


def test_html_error_page(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(Reply.html_error(502))
    response = client.get(url + "/v1/messages")
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert "<h1>502 Bad Gateway</h1>" in response.text


def test_reply_validation() -> None:
    reply = Reply(body=b"data: 1\n\ndata: 2\n\n")
    assert reply.offset_after_event(1) == 9
    assert reply.offset_after_event(2) == 18
    with pytest.raises(ValueError, match="fewer than 3"):
        reply.offset_after_event(3)
    with pytest.raises(ValueError, match="stall_after"):
        reply.replace(cut_after=5, stall_after=6)
    with pytest.raises(ValueError, match="split"):
        Reply(body=b"x", split=[0])
    with pytest.raises(ValueError, match="framing"):
        Reply(body=b"x", framing="gzip")  # type: ignore[arg-type]
    assert Reply(body=b' {"a": 1}').resolved_content_type == "application/json"
    assert Reply(body=b"data: x\n\n").resolved_content_type == "text/event-stream"


# -- requests, connections ---------------------------------------------------------------------


def test_records_requests(server: ReplayServer, client: httpx.Client) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "gemini" / "text.sse"))
    client.post(
        url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json={"contents": [{"parts": [{"text": "hé"}]}]},
        headers={"X-Goog-Api-Key": "k"},
    )
    (record,) = server.wait_for_done(url)
    assert record.method == "POST"
    assert record.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert record.query == "alt=sse"
    assert record.query_params == {"alt": ["sse"]}
    assert record.json() == {"contents": [{"parts": [{"text": "hé"}]}]}
    assert record.headers["x-goog-api-key"] == "k"
    assert record.headers["content-type"] == "application/json"
    assert record.done
    assert not record.closed_early
    assert server.requests(ReplayServer.scenario_id(url)) == [record]


def test_unknown_scenario_is_404(server: ReplayServer, client: httpx.Client) -> None:
    response = client.get(server.base_url + "/s/99999/v1/models")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert server.requests(99999) == []


def test_keep_alive_reuses_connection(fresh_server: ReplayServer, client: httpx.Client) -> None:
    url = fresh_server.add(Reply.from_file(CHAT_TEXT))
    close_url = fresh_server.add(Reply.from_file(CHAT_TEXT, framing="close"))
    for _ in range(3):
        client.get(url)
    assert {r.connection_id for r in fresh_server.requests(url)} == {1}
    for _ in range(2):
        client.get(close_url)
    # The first close-delimited reply ends connection 1; the next request needs a new one.
    assert [r.connection_id for r in fresh_server.requests(close_url)] == [1, 2]
    assert fresh_server.connections_opened == 2


def test_client_closing_early_is_detected(fresh_server: ReplayServer) -> None:
    reply = Reply.from_file(CHAT_TEXT)
    url = fresh_server.add(reply.replace(chunk_delay=0.05))
    with httpx.Client(timeout=5.0) as c, c.stream("GET", url) as response:
        first = next(response.iter_raw())
        assert first  # got the first event, then leave
    record = fresh_server.wait_for_disconnect(url, timeout=2.0)
    assert record.closed_early
    fresh_server.wait_for_idle(timeout=2.0)
    assert fresh_server.open_connections == 0


def test_async_wait_for_disconnect(fresh_server: ReplayServer) -> None:
    url = fresh_server.add(Reply.from_file(CHAT_TEXT, stall_after=0))

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5.0) as c, c.stream("GET", url) as response:
            assert response.status_code == 200
        record = await fresh_server.async_wait_for_disconnect(url, timeout=2.0)
        assert record.closed_early
        await fresh_server.async_wait_for_idle(timeout=2.0)

    asyncio.run(scenario())


def test_many_concurrent_streams(fresh_server: ReplayServer) -> None:
    path = RECORDINGS / "anthropic" / "text.sse"
    body = path.read_bytes()
    url = fresh_server.add(Reply.from_file(path, chunk_delay=0.01))
    n = 100

    async def one(c: httpx.AsyncClient) -> bytes:
        async with c.stream("POST", url + "/v1/messages", json={}) as response:
            return await response.aread()

    async def run() -> list[bytes]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as c:
            return await asyncio.gather(*(one(c) for _ in range(n)))

    results = asyncio.run(run())
    assert results == [body] * n
    assert len(fresh_server.requests(url)) == n
    assert fresh_server.connections_opened == n


def test_stop_closes_open_connections_without_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        srv = ReplayServer().start()
        url = srv.add(Reply.from_file(CHAT_TEXT, stall_after=100))
        with httpx.Client(timeout=5.0) as c, c.stream("GET", url) as response:
            received = bytearray()
            iterator = response.iter_raw()
            received += next(iterator)
            assert srv.open_connections == 1
            started = time.monotonic()
            srv.stop()
            assert time.monotonic() - started < 2.0
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                _collect(iterator, received)
        assert srv.open_connections == 0
        del srv
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# -- official SDKs reach it through their base URL ------------------------------------------


def test_openai_sdk_parses_chat_stream(server: ReplayServer) -> None:
    import openai

    url = server.add(Reply.from_file(CHAT_TEXT))
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0)
    try:
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    finally:
        sdk.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_TEXT
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 25
    (record,) = server.requests(url)
    assert record.path == "/v1/chat/completions"
    assert record.json()["stream"] is True


def test_google_genai_sdk_parses_gemini_stream(server: ReplayServer) -> None:
    from google import genai
    from google.genai import types

    url = server.add(Reply.from_file(RECORDINGS / "gemini" / "text.sse"))
    options = types.HttpOptions(base_url=url + "/", api_version="v1beta", timeout=5000)
    sdk = genai.Client(api_key="test", http_options=options)
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == EXPECTED_TEXT
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 20
    (record,) = server.requests(url)
    assert record.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert record.query == "alt=sse"
