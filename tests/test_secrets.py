"""No error carries an API key in the clear (issue 7, part 4): a canary-key sweep.

A canary key is configured for each of the four providers, sync and async, and every error
path is driven over the replay server (or a port where nothing listens, or one that never
accepts): refused and timed-out connections, 4xx/5xx bodies and HTML pages that echo the key,
in-stream error events that echo it, cut streams, stalls past each time limit, protocol
errors, a structured-output error, and retries whose attempts keep the errors.

For each resulting exception the sweep walks everything an error reporter could serialise:
the exception's args, attributes (recursively: `vars`, `__slots__`, dicts, lists, tuples,
bytes, httpx `Request`/`Response`/`Headers`), its `__cause__`/`__context__` chain, its
`partial` Response and `attempts`, `repr()`/`str()` of each, and the frame-free traceback text
of `traceback.format_exception`. The canary must appear nowhere; where a provider echoed it,
the masked form `****` + last 4 characters must be what is shown.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ConnectError,
    ConnectTimeout,
    FirstTokenTimeout,
    IdleTimeout,
    ProtocolError,
    ProviderError,
    RetryPolicy,
    ServerError,
    StreamInterrupted,
    StructuredOutputError,
    TallyError,
    TextDelta,
    Timeouts,
    TotalTimeout,
)
from tally_client._errors import AuthenticationError
from tally_client.testing.replay import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"
KEY = f"sk-canary-{secrets.token_hex(12)}"
MASKED = f"****{KEY[-4:]}"
NO_RETRY = RetryPolicy(max_attempts=1)
ONE_RETRY = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
FAST = Timeouts(connect=2.0, first_token=5.0, idle=0.3, total=10.0)


@dataclass(frozen=True)
class Wire:
    name: str
    protocol: str
    path: str
    newline: bytes
    model: str

    def body(self, scenario: str) -> bytes:
        return (RECORDINGS / self.name / f"{scenario}.sse").read_bytes()

    def event(self, data: str, name: str | None = None) -> bytes:
        nl = self.newline.decode()
        head = f"event: {name}{nl}" if name else ""
        return f"{head}data: {data}{nl}{nl}".encode()

    def through_first_text(self) -> bytes:
        """The recording's events up to and including the first with output text."""
        from tally_client._config import load_provider

        decoder = load_provider(self.protocol, api_key="k").new_decoder()
        sep = self.newline * 2
        events = self.body("text").split(sep)
        for n, raw in enumerate(events, 1):
            lines = raw.decode().replace("\r\n", "\n").split("\n")
            name = next((x[6:].strip() for x in lines if x.startswith("event:")), "")
            data = "\n".join(x[5:].strip() for x in lines if x.startswith("data:"))
            if data and any(isinstance(e, TextDelta) for e in decoder.feed(name, data)):
                return sep.join(events[:n]) + sep
        raise AssertionError("no text in the recording")

    def first_events(self, n: int) -> bytes:
        body = self.body("text")
        sep = self.newline * 2
        return sep.join(body.split(sep)[:n]) + sep


WIRES = [
    Wire("openai_chat", "openai-chat", "/v1", b"\n", "gpt-4o-mini"),
    Wire("openai_responses", "openai-responses", "/v1", b"\n", "gpt-5"),
    Wire("anthropic", "anthropic", "", b"\n", "claude-sonnet-4-5"),
    Wire("gemini", "gemini", "", b"\r\n", "gemini-2.5-flash"),
]

ECHO = f"Incorrect API key provided: {KEY}. You can find your key in your dashboard."


def error_body(wire: Wire, status: int) -> dict[str, Any]:
    """The provider's own HTTP error body shape, echoing the key."""
    if wire.protocol == "anthropic":
        return {"type": "error", "error": {"type": "authentication_error", "message": ECHO}}
    if wire.protocol == "gemini":
        return {"error": {"code": status, "message": ECHO, "status": "UNAUTHENTICATED"}}
    return {"error": {"message": ECHO, "type": "invalid_request_error", "code": "invalid_api_key"}}


def echoing(body: bytes) -> bytes:
    """A recording whose one error message echoes the key."""
    for quote in (b'"message": "', b'"message":"'):
        body = body.replace(quote, quote + f"echo {KEY} ".encode())
    assert KEY.encode() in body
    return body


def malformed_event(wire: Wire) -> bytes:
    """A well-formed JSON event of a shape the protocol does not allow, showing the key."""
    if wire.protocol == "openai-chat":
        return wire.event(f'{{"choices": "{KEY}"}}')
    if wire.protocol == "openai-responses":
        return wire.event(f'{{"type": "response.output_text.delta", "delta": ["{KEY}"]}}')
    if wire.protocol == "anthropic":
        data = f'{{"type": "content_block_delta", "index": 0, "delta": "{KEY}"}}'
        return wire.event(data, "content_block_delta")
    return wire.event(f'{{"candidates": [{{"content": {{"parts": ["{KEY}"]}}}}]}}')


# -- paths --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path_:
    """One error path: the replies to serve, call options, and the error expected."""

    name: str
    replies: Callable[[Wire], list[Reply]]
    expected: type[TallyError]
    echoed: bool = False  # the server echoed the key: the masked form must show
    options: dict[str, Any] | None = None
    stream: bool = True


def _sse(body: bytes, **faults: Any) -> Reply:
    return Reply(body=body, content_type="text/event-stream", **faults)


PATHS = [
    Path_("401 echoing the key", lambda w: [Reply.error(401, error_body(w, 401))],
          AuthenticationError, echoed=True),
    Path_("500 echoing the key, retried", lambda w: [Reply.error(500, error_body(w, 500))],
          ServerError, echoed=True, options={"retry": ONE_RETRY}),
    Path_("502 HTML page echoing the key",
          lambda w: [Reply(body=f"<html><p>bad key {KEY}</p></html>".encode(), status=502,
                           content_type="text/html", framing="content-length")],
          ServerError, echoed=True),
    Path_("200 HTML page echoing the key",
          lambda w: [Reply(body=f"<html><p>login {KEY}</p></html>".encode(),
                           content_type="text/html", framing="content-length")],
          ProtocolError, echoed=True),
    Path_("in-stream error event echoing the key, retried",
          lambda w: [_sse(echoing(w.body("error_event")))],
          ProviderError, echoed=True, options={"retry": ONE_RETRY}),
    Path_("SSE data that is not JSON, echoing the key",
          lambda w: [_sse(w.first_events(2) + w.event(f"<html>{KEY}</html>"))],
          ProtocolError, echoed=True),
    Path_("JSON of a malformed shape, echoing the key",
          lambda w: [_sse(w.first_events(2) + malformed_event(w))], ProtocolError, echoed=True),
    Path_("stream reset mid-body",
          lambda w: [_sse(w.body("text"), cut_after=len(w.through_first_text()), cut="reset")],
          StreamInterrupted),
    Path_("chunked body aborted",
          lambda w: [_sse(w.body("text"), cut_after=len(w.through_first_text()), cut="abort")],
          StreamInterrupted),
    Path_("stream cut cleanly, then a 500 echoing the key",
          lambda w: [_sse(w.body("text"), cut_after=len(w.through_first_text())),
                     Reply.error(500, error_body(w, 500))],
          ServerError, echoed=True, options={"retry": ONE_RETRY}),
    Path_("idle timeout",
          lambda w: [_sse(w.body("text"), stall_after=len(w.through_first_text()))], IdleTimeout),
    Path_("first-token timeout",
          lambda w: [_sse(w.body("text"), stall_after=0)], FirstTokenTimeout,
          options={"timeouts": Timeouts(first_token=0.3, idle=5.0, total=10.0)}),
    Path_("headers never come",
          lambda w: [_sse(w.body("text"), headers_delay=3.0)], FirstTokenTimeout,
          options={"timeouts": Timeouts(first_token=0.3, idle=5.0, total=10.0)}),
    Path_("total timeout",
          lambda w: [_sse(w.body("text"), stall_after=len(w.through_first_text()))], TotalTimeout,
          options={"timeouts": Timeouts(first_token=5.0, idle=5.0, total=0.4)}),
    Path_("connection dropped before the response",
          lambda w: [Reply.disconnect(reset=True)], ProviderError),
    Path_("atomic 401 echoing the key", lambda w: [Reply.error(401, error_body(w, 401))],
          AuthenticationError, echoed=True, stream=False),
    Path_("structured output that is not JSON", lambda w: [_sse(w.body("text"))],
          StructuredOutputError, options={"schema": {"type": "object"}}),
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def never_accepts() -> Iterator[int]:
    """A port whose accept queue is full: a connect there hangs until its time limit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def call(
    base_url: str, wire: Wire, use_async: bool, *, stream: bool = True, **options: Any
) -> TallyError:
    """Make the call and return the error it raised (failing if none was raised)."""
    options.setdefault("retry", NO_RETRY)
    settings = {
        "base_url": base_url + wire.path,
        "api_key": KEY,
        "protocol": wire.protocol,
        "model": wire.model,
        "timeouts": options.pop("timeouts", FAST),
    }
    if use_async:

        async def main() -> None:
            async with AsyncClient(**settings) as client:
                if stream:
                    async with client.stream("hi", **options) as s:
                        async for _ in s:
                            pass
                        await s.final()
                else:
                    await client.complete("hi", **options)

        try:
            anyio.run(main)
        except TallyError as exc:
            return exc
    else:
        try:
            with Client(**settings) as client:
                if stream:
                    with client.stream("hi", **options) as s:
                        for _ in s:
                            pass
                        s.final()
                else:
                    client.complete("hi", **options)
        except TallyError as exc:
            return exc
    pytest.fail("the call did not fail")


# -- the walk -----------------------------------------------------------------------------------

_ATOMS = (int, float, bool, type(None), complex)
_SKIP = (type, type(len), type(call), type(socket))  # classes, builtins, functions, modules


class Sweep:
    """Walks everything reachable from an exception and records where `canary` shows."""

    def __init__(self, canary: str) -> None:
        self.canary = canary
        self.raw = canary.encode()
        self.found: list[str] = []
        self.seen: set[int] = set()

    def text(self, value: str, where: str) -> None:
        if self.canary in value:
            self.found.append(where)

    def walk(self, obj: Any, where: str, depth: int = 0) -> None:
        if isinstance(obj, (*_ATOMS, *_SKIP)) or depth > 14:
            return
        if isinstance(obj, str):
            self.text(obj, where)
            return
        if isinstance(obj, bytes | bytearray | memoryview):
            if self.raw in bytes(obj):
                self.found.append(where)
            return
        if id(obj) in self.seen or len(self.seen) > 50_000:
            return
        self.seen.add(id(obj))
        with contextlib.suppress(Exception):  # a repr that fails shows nothing
            self.text(repr(obj), f"repr({where})")
            self.text(str(obj), f"str({where})")
        for name, value in self.children(obj, where):
            self.walk(value, name, depth + 1)

    def children(self, obj: Any, where: str) -> list[tuple[str, Any]]:
        """What a reporter could reach from `obj`: items, attributes, causes, headers."""
        out: list[tuple[str, Any]] = []
        if isinstance(obj, BaseException):
            self.text("".join(traceback.format_exception(obj)), f"traceback({where})")
            out += [(f"{where}.args", obj.args), (f"{where}.__cause__", obj.__cause__),
                    (f"{where}.__context__", obj.__context__),
                    (f"{where}.__notes__", getattr(obj, "__notes__", None))]  # fmt: skip
        if isinstance(obj, httpx.Headers):
            out.append((f"{where}.raw", obj.raw))
        if isinstance(obj, httpx.Request | httpx.Response):
            out.append((f"{where}.headers", obj.headers))
        if isinstance(obj, httpx.Request):
            out.append((f"{where}.url", str(obj.url)))
        if isinstance(obj, httpx.Response):
            out.append((f"{where}.request", getattr(obj, "_request", None)))
        if isinstance(obj, dict):
            for key, value in list(obj.items()):
                out += [(f"{where}[key]", key), (f"{where}[{key!r}]", value)]
            return out
        if isinstance(obj, list | tuple | set | frozenset):
            return out + [(f"{where}[{i}]", item) for i, item in enumerate(list(obj))]
        if type(obj).__name__ in ("traceback", "frame", "code"):
            return out  # frames hold locals by design; their text form is checked above
        attrs = dict(getattr(obj, "__dict__", None) or {})
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if slot not in attrs and hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
        return out + [(f"{where}.{name}", value) for name, value in attrs.items()]


def find_canary(root: BaseException, canary: str = KEY) -> list[str]:
    """Every place reachable from `root` where `canary` shows in the clear."""
    sweep = Sweep(canary)
    sweep.walk(root, "exc")
    return sweep.found


def test_the_walk_finds_a_key_where_one_is_hidden() -> None:
    """The sweep itself can fail: a key deep in a cause's request headers is found."""
    request = httpx.Request("POST", "http://h/v1", headers={"x-api-key": KEY})
    cause = httpx.ConnectError("refused", request=request)
    try:
        try:
            raise cause
        except httpx.ConnectError as inner:
            raise ConnectError("could not connect") from inner
    except ConnectError as exc:
        found = find_canary(exc)
    assert any("__cause__" in where for where in found)
    assert find_canary(ConnectError(f"masked {MASKED}")) == []


# -- the sweep ----------------------------------------------------------------------------------


def _check(error: TallyError, echoed: bool) -> None:
    found = find_canary(error)
    assert found == [], f"the canary key shows in the clear at: {found[:8]}"
    if echoed:
        shown = repr(getattr(error, "body", None)) + str(error)
        shown += "".join(str(a.error) for a in getattr(error, "attempts", ()))
        assert MASKED in shown, "the echoed key should show masked"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_no_error_path_shows_the_key(
    server: ReplayServer, wire: Wire, path: Path_, use_async: bool
) -> None:
    url = server.add(path.replies(wire))
    error = call(url, wire, use_async, stream=path.stream, **(path.options or {}))
    assert isinstance(error, path.expected), repr(error)
    sent = server.requests(url)[0].headers
    assert KEY in " ".join(sent.values())  # the key was really sent, so it could have leaked
    _check(error, path.echoed)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_connection_refused_shows_no_key(wire: Wire, use_async: bool) -> None:
    error = call(f"http://127.0.0.1:{_free_port()}", wire, use_async)
    assert isinstance(error, ConnectError), repr(error)
    _check(error, echoed=False)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_connect_timeout_shows_no_key(never_accepts: int, wire: Wire, use_async: bool) -> None:
    timeouts = Timeouts(connect=0.3, first_token=5.0, idle=5.0, total=10.0)
    error = call(f"http://127.0.0.1:{never_accepts}", wire, use_async, timeouts=timeouts)
    assert isinstance(error, ConnectTimeout), repr(error)
    _check(error, echoed=False)


AUTH_HEADER = {
    "openai-chat": ("Authorization", "Bearer "),
    "openai-responses": ("Authorization", "Bearer "),
    "anthropic": ("x-api-key", ""),
    "gemini": ("x-goog-api-key", ""),
}


@pytest.mark.parametrize("per_call", [False, True], ids=["client-headers", "call-headers"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_a_key_sent_in_extra_headers_is_masked_too(
    server: ReplayServer, wire: Wire, per_call: bool
) -> None:
    url = server.add(Reply.error(401, error_body(wire, 401)))
    name, scheme = AUTH_HEADER[wire.protocol]
    headers = {name: f"{scheme}{KEY}"}
    settings: dict[str, Any] = {
        "base_url": url + wire.path, "protocol": wire.protocol, "model": wire.model,
        "retry": NO_RETRY,
    }  # fmt: skip
    client = Client(**settings, extra_headers=None if per_call else headers)
    with client, pytest.raises(AuthenticationError) as info:
        client.complete("hi", extra_headers=headers if per_call else {})
    assert server.requests(url)[0].headers[name.lower()] == f"{scheme}{KEY}"
    _check(info.value, echoed=True)
