"""A loopback HTTP/1.1 server that replays recorded LLM responses and injects faults.

`ReplayServer` runs `asyncio.start_server` on 127.0.0.1 in a background thread with its own
event loop. Tests register `Scenario`s (sequences of `Reply`s); each scenario gets a URL prefix
(`http://127.0.0.1:PORT/s/N`) that any client, ours or an official SDK, takes as its base URL.
Whatever path and query follow the prefix, the scenario answers, and the request is recorded.

Because it writes raw bytes on raw sockets, a reply can break the transport the ways real
networks do: a TCP reset, a chunked body that never gets its terminating `0\\r\\n\\r\\n`, a
Content-Length larger than what is sent, a clean but early end, a stall, or a body written in
arbitrary pieces (splitting SSE events and UTF-8 characters).

Example:
    ```python
    with ReplayServer() as server:
        url = server.add(Scenario(Reply.error(429, {"error": {}}), Reply.from_file(path)))
        client = openai.OpenAI(base_url=url + "/v1", api_key="test")
        ...
        assert [r.path for r in server.requests(url)] == ["/v1/chat/completions"] * 2
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http
import itertools
import json
import math
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs

__all__ = [
    "CutMode",
    "Framing",
    "RecordedRequest",
    "ReplayServer",
    "Reply",
    "Scenario",
]

Framing = Literal["chunked", "content-length", "close"]
"""How the response body is delimited: chunked transfer coding, a Content-Length header, or
the end of the connection (HTTP/1.0 style, `Connection: close`)."""

CutMode = Literal["clean", "reset", "abort"]
"""How a body cut by `Reply.cut_after` ends: `clean` (framing says the body is complete),
`reset` (TCP RST) or `abort` (framing left incomplete, then a normal close)."""

_FRAMINGS = ("chunked", "content-length", "close")
_CUT_MODES = ("clean", "reset", "abort")
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_SCENARIO_PREFIX = re.compile(r"^/s/(\d+)(?=/|$)")
_SCENARIO_IN_URL = re.compile(r"/s/(\d+)(?:/|\?|$)")
_MAX_HEAD_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024
_EXTRA_REASONS = {529: "Site Overloaded"}

_HTML_ERROR_TEMPLATE = """<html>
<head><title>{status} {reason}</title></head>
<body>
<center><h1>{status} {reason}</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status, "Unknown")


@dataclass(frozen=True)
class Reply:
    """One HTTP response, with optional transport faults.

    Byte counts (`cut_after`, `stall_after`, `split`) count body bytes only, before chunked
    framing is added. Durations are in seconds.

    Attributes:
        body: the response body, sent byte for byte.
        status: the HTTP status code.
        content_type: the Content-Type header; None picks `application/json` for a body that
            starts with `{` or `[`, else `text/event-stream`.
        headers: extra response headers (e.g. `retry-after`, `retry-after-ms`,
            `x-request-id`). A `content-type` given here replaces `content_type`.
        framing: how the body is delimited: `chunked` (default), `content-length`, or
            `close` (no length; the server closes the connection after the body).
        cut_after: send only the first N bytes of the body, then end as `cut` says.
        cut: how a cut body ends. `clean`: it looks complete (zero-length chunk; a
            Content-Length of N; or a plain close). `reset`: TCP RST (SO_LINGER 0).
            `abort`: chunked ends without the terminating zero-length chunk, content-length
            declares the full length but stops short; then the connection is closed (for
            `close` framing, same as `clean`).
        stall_after: after N body bytes (0 = right after the headers), stop writing for
            `stall_seconds`, keeping the socket open. N may equal the number of bytes sent,
            which stalls before the body's end is signalled.
        stall_seconds: how long a stall lasts, in seconds; `math.inf` (default) stalls until
            the client disconnects or the server stops.
        split: write the body in pieces of these sizes in bytes (cycling), each flushed to
            the socket, so events break at arbitrary bytes, even inside a UTF-8 character.
        split_delay: seconds to sleep between `split` pieces.
        chunk_delay: when `split` is None, write the body one SSE event per write and sleep
            this many seconds between events (pacing like a live model).
        headers_delay: seconds to wait before sending the status line (slow first byte).
        drop_connection: answer nothing: `close` closes the connection before any response
            byte (a FIN), `reset` resets it (RST).
    """

    body: bytes = b""
    status: int = 200
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    framing: Framing = "chunked"
    cut_after: int | None = None
    cut: CutMode = "clean"
    stall_after: int | None = None
    stall_seconds: float = math.inf
    split: Sequence[int] | None = None
    split_delay: float = 0.0
    chunk_delay: float = 0.0
    headers_delay: float = 0.0
    drop_connection: Literal["close", "reset"] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", dict(self.headers))
        if self.split is not None:
            object.__setattr__(self, "split", tuple(self.split))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.body, bytes):
            raise TypeError("Reply.body must be bytes")
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid HTTP status {self.status}")
        if self.framing not in _FRAMINGS:
            raise ValueError(f"framing must be one of {_FRAMINGS}, not {self.framing!r}")
        if self.cut not in _CUT_MODES:
            raise ValueError(f"cut must be one of {_CUT_MODES}, not {self.cut!r}")
        if self.drop_connection not in (None, "close", "reset"):
            raise ValueError("drop_connection must be None, 'close' or 'reset'")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError("cut_after must be >= 0")
        if self.stall_after is not None and not 0 <= self.stall_after <= self.sent_length:
            raise ValueError(
                f"stall_after must be between 0 and the bytes sent ({self.sent_length})"
            )
        if self.split is not None and (not self.split or any(n <= 0 for n in self.split)):
            raise ValueError("split must be a non-empty sequence of positive sizes")
        if self.split is not None and self.chunk_delay > 0:
            raise ValueError("use split_delay with split; chunk_delay paces SSE events")
        for name in ("stall_seconds", "split_delay", "chunk_delay", "headers_delay"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be >= 0 seconds")

    @property
    def sent_length(self) -> int:
        """Number of body bytes the server writes (all of them unless `cut_after` is set)."""
        if self.cut_after is None:
            return len(self.body)
        return min(self.cut_after, len(self.body))

    @property
    def resolved_content_type(self) -> str:
        """The Content-Type the server sends for this reply."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        if self.content_type is not None:
            return self.content_type
        if self.body.lstrip()[:1] in (b"{", b"["):
            return "application/json"
        return "text/event-stream"

    def replace(self, **changes: Any) -> Reply:
        """Return a copy with some fields changed (e.g. faults added to a recording)."""
        return dataclasses.replace(self, **changes)

    def offset_after_event(self, n: int) -> int:
        """Byte offset just after the `n`-th SSE event of the body (its blank line included).

        Handy for faults placed between events: `reply.replace(cut_after=
        reply.offset_after_event(2), cut="abort")` sends exactly two events.

        Raises:
            ValueError: the body has fewer than `n` events or `n` < 1.
        """
        if n < 1:
            raise ValueError("n counts events from 1")
        for i, match in enumerate(_EVENT_END.finditer(self.body), start=1):
            if i == n:
                return match.end()
        raise ValueError(f"the body has fewer than {n} SSE events")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **faults: Any) -> Reply:
        """Build a reply whose body is a recorded file.

        The content type follows the extension: `.sse` gives `text/event-stream` (chunked),
        `.json` gives `application/json` (Content-Length framing unless `framing` is given).

        Args:
            path: the recording.
            **faults: any other `Reply` field (`status`, `cut_after`, `split`, ...).
        """
        file = Path(path)
        suffix = file.suffix.lower()
        if suffix == ".sse":
            faults.setdefault("content_type", "text/event-stream")
        elif suffix == ".json":
            faults.setdefault("content_type", "application/json")
            faults.setdefault("framing", "content-length")
        return cls(body=file.read_bytes(), **faults)

    @classmethod
    def json(
        cls,
        obj: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **faults: Any,
    ) -> Reply:
        """Build an `application/json` reply with Content-Length framing from a JSON value."""
        faults.setdefault("framing", "content-length")
        return cls(
            body=json.dumps(obj, ensure_ascii=False).encode(),
            status=status,
            content_type="application/json",
            headers=dict(headers or {}),
            **faults,
        )

    @classmethod
    def error(
        cls,
        status: int,
        json_body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        **faults: Any,
    ) -> Reply:
        """Build a JSON error reply, e.g. `Reply.error(429, body, {"retry-after-ms": "10"})`.

        Args:
            status: the HTTP status code.
            json_body: the provider's error body (serialised compactly).
            headers: extra response headers.
            **faults: any other `Reply` field.
        """
        return cls.json(json_body, status=status, headers=headers, **faults)

    @classmethod
    def html_error(cls, status: int = 502, **faults: Any) -> Reply:
        """Build the HTML error page a reverse proxy (nginx) returns, e.g. 502 Bad Gateway."""
        body = _HTML_ERROR_TEMPLATE.format(status=status, reason=_reason(status)).encode()
        faults.setdefault("framing", "content-length")
        return cls(body=body, status=status, content_type="text/html", **faults)

    @classmethod
    def disconnect(cls, reset: bool = False) -> Reply:
        """Build a reply that closes (or, with `reset`, resets) the connection before any byte."""
        return cls(drop_connection="reset" if reset else "close")


class Scenario:
    """The replies of one scenario: request k gets reply k; the last reply then repeats.

    Args:
        *replies: at least one `Reply`.
    """

    __slots__ = ("replies",)

    def __init__(self, *replies: Reply) -> None:
        if not replies:
            raise ValueError("a Scenario needs at least one Reply")
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"expected Reply, got {type(reply).__name__}")
        self.replies: tuple[Reply, ...] = tuple(replies)

    def reply_for(self, attempt: int) -> Reply:
        """The reply for the `attempt`-th request (0-based) to this scenario."""
        return self.replies[min(attempt, len(self.replies) - 1)]

    def __repr__(self) -> str:
        return f"Scenario({len(self.replies)} replies)"


@dataclass
class RecordedRequest:
    """One request the server received.

    The server thread fills `closed_early` and `done` as the response is sent; `done` can
    lag the client by a moment, so wait with `ReplayServer.wait_for_done` (or
    `wait_for_disconnect`) before asserting on them.

    Attributes:
        scenario_id: the scenario that served it, None if the path matched none (404).
        attempt: 0-based index of this request among the scenario's requests.
        connection_id: which TCP connection carried it (equal ids: keep-alive reuse).
        method: the request method, e.g. "POST".
        path: the path after the `/s/N` prefix, e.g. "/v1/chat/completions".
        query: the raw query string without `?` ("" if none).
        headers: request headers, names lower-cased (repeated headers joined by ", ").
        body: the request body in bytes.
        closed_early: the client closed the connection before the server finished sending
            the body.
        done: the server finished handling the request (whatever the outcome).
    """

    scenario_id: int | None
    attempt: int
    connection_id: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    closed_early: bool = False
    done: bool = False

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body)

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string parsed into lists of values per name."""
        return parse_qs(self.query, keep_blank_values=True)


class _BadRequest(Exception):
    pass


class _Connection:
    __slots__ = ("buf", "gone", "id", "reader", "reset", "writer")

    def __init__(self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.gone = asyncio.Event()
        self.reset = False


class ReplayServer:
    """Loopback HTTP/1.1 server replaying `Scenario`s, in a background thread.

    Use as a context manager (`with ReplayServer() as server:`) or call `start()`/`stop()`.
    It keeps connections alive between requests unless a reply or the client ends them, and
    serves hundreds of concurrent connections.

    Args:
        host: the address to bind (loopback).
        port: the port; 0 picks a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._stopped = False
        self._cond = threading.Condition()
        self._scenarios: dict[int, Scenario] = {}
        self._attempts: dict[int, int] = {}
        self._records: list[RecordedRequest] = []
        self._next_scenario = itertools.count(1)
        self._next_connection = itertools.count(1)
        self._open_connections = 0
        self._connections_opened = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ReplayServer:
        """Bind and start serving; returns self.

        Raises:
            RuntimeError: the server was already started.
        """
        if self._thread is not None:
            raise RuntimeError("ReplayServer already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="ReplayServer", daemon=True
        )
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), loop)
        try:
            future.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listening socket, then end the thread.

        Args:
            timeout: seconds to wait for the shutdown.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopped:
            return
        self._stopped = True
        try:
            if thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
                future.result(timeout=timeout)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=timeout)
            with self._cond:
                self._cond.notify_all()

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._server is not None else "not started"
        return f"<ReplayServer {where}, {self.open_connections} open connection(s)>"

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, backlog=4096, reuse_address=True
        )
        sockets = self._server.sockets
        self._port = int(sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        for _ in range(20):
            others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
            if not others:
                break
            for task in others:
                task.cancel()
            await asyncio.wait(others, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

    # -- public state ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        self._require_started()
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        self._require_started()
        return f"http://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        """Number of client connections currently open."""
        with self._cond:
            return self._open_connections

    @property
    def connections_opened(self) -> int:
        """Number of client connections accepted since start."""
        with self._cond:
            return self._connections_opened

    @property
    def disconnects(self) -> int:
        """Number of requests whose client closed the connection before the body was sent."""
        with self._cond:
            return sum(1 for r in self._records if r.closed_early)

    def _require_started(self) -> None:
        if self._server is None:
            raise RuntimeError("ReplayServer is not started")

    def add(self, scenario: Scenario | Reply | Sequence[Reply]) -> str:
        """Register a scenario and return its base URL, `http://127.0.0.1:PORT/s/N`.

        Args:
            scenario: a `Scenario`, a single `Reply`, or a sequence of replies.

        Returns:
            The URL prefix to use as a client's base URL (append `/v1` for openai).
        """
        self._require_started()
        if self._stopped:
            raise RuntimeError("ReplayServer is stopped")
        if isinstance(scenario, Reply):
            scenario = Scenario(scenario)
        elif not isinstance(scenario, Scenario):
            scenario = Scenario(*scenario)
        with self._cond:
            scenario_id = next(self._next_scenario)
            self._scenarios[scenario_id] = scenario
            self._attempts[scenario_id] = 0
        return f"{self.base_url}/s/{scenario_id}"

    @staticmethod
    def scenario_id(url_or_id: str | int) -> int:
        """The scenario number from a URL returned by `add` (or a request URL under it)."""
        if isinstance(url_or_id, int):
            return url_or_id
        match = _SCENARIO_IN_URL.search(url_or_id)
        if match is None:
            raise ValueError(f"no /s/<id> scenario prefix in {url_or_id!r}")
        return int(match.group(1))

    def requests(self, scenario: str | int | None = None) -> list[RecordedRequest]:
        """The requests received, in arrival order.

        Args:
            scenario: a URL returned by `add` or a scenario id; None gives every request,
                including unmatched ones (scenario_id None).
        """
        with self._cond:
            if scenario is None:
                return list(self._records)
            sid = self.scenario_id(scenario)
            return [r for r in self._records if r.scenario_id == sid]

    def wait_for_disconnect(
        self, scenario: str | int | None = None, timeout: float = 5.0
    ) -> RecordedRequest:
        """Block until a request's client closed the connection before the body was sent.

        Args:
            scenario: restrict to this scenario (URL or id); None accepts any.
            timeout: seconds to wait.

        Returns:
            The first such request.

        Raises:
            TimeoutError: no such disconnect within `timeout` seconds.
        """
        sid = None if scenario is None else self.scenario_id(scenario)

        def early() -> RecordedRequest | None:
            for record in self._records:
                if record.closed_early and (sid is None or record.scenario_id == sid):
                    return record
            return None

        with self._cond:
            found = self._cond.wait_for(early, timeout)
        if found is None:
            raise TimeoutError(f"no early client disconnect within {timeout} s")
        return found

    def wait_for_idle(self, timeout: float = 5.0) -> None:
        """Block until no client connection is open.

        Args:
            timeout: seconds to wait.

        Raises:
            TimeoutError: connections still open after `timeout` seconds.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: self._open_connections == 0, timeout)
            still_open = self._open_connections
        if not ok:
            raise TimeoutError(f"{still_open} connection(s) still open after {timeout} s")

    def wait_for_done(
        self, scenario: str | int | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until the server finished handling every request received (of a scenario).

        `RecordedRequest.done` is set just after the last byte was written, so it can lag a
        client that already read the whole response; call this before asserting on it.

        Raises:
            TimeoutError: a request is still being answered after `timeout` seconds.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: all(r.done for r in self.requests(scenario)), timeout)
        if not ok:
            raise TimeoutError(f"requests still being answered after {timeout} s")
        return self.requests(scenario)

    def wait_for_requests(
        self, scenario: str | int | None, count: int, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least `count` requests (of a scenario, or in all) were received.

        Raises:
            TimeoutError: fewer requests after `timeout` seconds.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.requests(scenario)) >= count, timeout)
        if not ok:
            raise TimeoutError(f"fewer than {count} requests after {timeout} s")
        return self.requests(scenario)

    async def async_wait_for_disconnect(
        self,
        scenario: str | int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - bounds the blocking wait in the worker thread
    ) -> RecordedRequest:
        """`wait_for_disconnect` for async tests (waits in a worker thread, via anyio)."""
        import anyio.to_thread

        call = functools.partial(self.wait_for_disconnect, scenario, timeout)
        return await anyio.to_thread.run_sync(call)

    async def async_wait_for_idle(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """`wait_for_idle` for async tests (waits in a worker thread, via anyio)."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(functools.partial(self.wait_for_idle, timeout))

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- connection handling (event loop thread) --------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(next(self._next_connection), reader, writer)
        # High-water mark 0: drain() returns only once every byte reached the kernel, so a
        # fault (stall, reset) happens exactly after the bytes announced before it.
        writer.transport.set_write_buffer_limits(high=0)
        with self._cond:
            self._open_connections += 1
            self._connections_opened += 1
            self._cond.notify_all()
        try:
            if not self._closing:
                await self._serve_connection(conn)
        except asyncio.CancelledError:
            # Only `stop()` cancels handlers. End normally: Python 3.11's start_server
            # callback calls task.exception(), which would log a cancelled task as an error.
            pass
        except Exception as exc:  # a bug here must show, not vanish with the task
            asyncio.get_running_loop().call_exception_handler(
                {"message": "ReplayServer connection handler failed", "exception": exc}
            )
        finally:
            try:
                await self._close_connection(conn)
            finally:
                with self._cond:
                    self._open_connections -= 1
                    self._cond.notify_all()

    async def _close_connection(self, conn: _Connection) -> None:
        transport = conn.writer.transport
        if conn.reset:
            sock = conn.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif self._closing:
            transport.abort()
        else:
            conn.writer.close()
        try:
            await asyncio.wait_for(conn.writer.wait_closed(), 2.0)
        except TimeoutError:
            transport.abort()
        except (ConnectionError, OSError):
            pass  # the peer is gone; nothing to report

    async def _serve_connection(self, conn: _Connection) -> None:
        while True:
            try:
                request = await self._read_request(conn)
            except _BadRequest as exc:
                await self._send_simple(conn, 400, str(exc))
                return
            except (ConnectionError, OSError):
                return
            if request is None:
                return
            record, client_keep_alive = request
            reply = self._select_reply(record)
            watcher = asyncio.create_task(self._watch_peer(conn))
            try:
                keep_alive = await self._send_reply(conn, record, reply, client_keep_alive)
            except (ConnectionError, OSError):
                record.closed_early = True
                keep_alive = False
            finally:
                watcher.cancel()
                await asyncio.wait([watcher])
                record.done = True
                self._changed()
            if not keep_alive or conn.gone.is_set():
                return

    async def _fill(self, conn: _Connection) -> bool:
        """Read more bytes into the connection buffer; False at end of stream."""
        data = await conn.reader.read(_READ_SIZE)
        if not data:
            return False
        conn.buf += data
        return True

    async def _read_line(self, conn: _Connection) -> bytes:
        while (idx := conn.buf.find(b"\r\n")) < 0:
            if len(conn.buf) > _MAX_HEAD_BYTES:
                raise _BadRequest("line too long")
            if not await self._fill(conn):
                raise _BadRequest("connection ended inside the request")
        line = bytes(conn.buf[:idx])
        del conn.buf[: idx + 2]
        return line

    async def _read_exact(self, conn: _Connection, n: int) -> bytes:
        while len(conn.buf) < n:
            if not await self._fill(conn):
                raise _BadRequest("connection ended inside the request body")
        data = bytes(conn.buf[:n])
        del conn.buf[:n]
        return data

    async def _read_request(self, conn: _Connection) -> tuple[RecordedRequest, bool] | None:
        # The head: request line and header lines up to the blank line.
        while (end := conn.buf.find(b"\r\n\r\n")) < 0:
            if len(conn.buf) > _MAX_HEAD_BYTES:
                raise _BadRequest("request head too large")
            if conn.gone.is_set() or not await self._fill(conn):
                if conn.buf.strip():
                    raise _BadRequest("connection ended inside the request head")
                return None
        head = bytes(conn.buf[:end]).decode("latin-1")
        del conn.buf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(f"bad request line {request_line!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {line!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

        # The body: chunked or Content-Length.
        if "chunked" in headers.get("transfer-encoding", "").lower():
            pieces = []
            while True:
                size_line = await self._read_line(conn)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError as exc:
                    raise _BadRequest("bad chunk size") from exc
                if size == 0:
                    while await self._read_line(conn):  # trailers, then the blank line
                        pass
                    break
                pieces.append(await self._read_exact(conn, size))
                await self._read_exact(conn, 2)
            body = b"".join(pieces)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError as exc:
                raise _BadRequest("bad Content-Length") from exc
            body = await self._read_exact(conn, length) if length > 0 else b""

        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version != "HTTP/1.0" or "keep-alive" in connection
        )
        path, _, query = target.partition("?")
        match = _SCENARIO_PREFIX.match(path)
        scenario_id = int(match.group(1)) if match else None
        rest = (path[match.end() :] or "/") if match else path
        record = RecordedRequest(
            scenario_id=scenario_id,
            attempt=0,
            connection_id=conn.id,
            method=method,
            path=rest,
            query=query,
            headers=headers,
            body=body,
        )
        return record, keep_alive

    def _select_reply(self, record: RecordedRequest) -> Reply:
        with self._cond:
            scenario = self._scenarios.get(record.scenario_id) if record.scenario_id else None
            if scenario is None or record.scenario_id is None:
                record.scenario_id = None
                reply = Reply.error(
                    404,
                    {
                        "error": {
                            "message": f"no replay scenario for {record.path!r}",
                            "type": "not_found_error",
                        }
                    },
                )
            else:
                record.attempt = self._attempts[record.scenario_id]
                self._attempts[record.scenario_id] = record.attempt + 1
                reply = scenario.reply_for(record.attempt)
            self._records.append(record)
            self._cond.notify_all()
        return reply

    async def _watch_peer(self, conn: _Connection) -> None:
        """While a reply is sent, read from the client to notice it closing the connection."""
        try:
            while await self._fill(conn):
                pass
        except (ConnectionError, OSError):
            pass
        conn.gone.set()

    async def _pause(self, conn: _Connection, seconds: float) -> bool:
        """Sleep `seconds` unless the client leaves first; True if it left."""
        if conn.gone.is_set():
            return True
        if seconds <= 0:
            return False
        timeout = None if math.isinf(seconds) else seconds
        try:
            await asyncio.wait_for(conn.gone.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _send_simple(self, conn: _Connection, status: int, message: str) -> None:
        body = message.encode()
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(ConnectionError, OSError):
            conn.writer.write(head + body)
            await conn.writer.drain()

    @staticmethod
    def _head(reply: Reply, declared_length: int, announce_close: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {reply.status} {_reason(reply.status)}",
            f"Content-Type: {reply.resolved_content_type}",
        ]
        if reply.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        elif reply.framing == "content-length":
            lines.append(f"Content-Length: {declared_length}")
        if announce_close:
            lines.append("Connection: close")
        lines.append("Server: tally-replay")
        for name, value in reply.headers.items():
            if name.lower() != "content-type":
                lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _pieces(reply: Reply, payload: bytes) -> Iterator[bytes]:
        if reply.split is not None:
            pos = 0
            for size in itertools.cycle(reply.split):
                if pos >= len(payload):
                    return
                yield payload[pos : pos + size]
                pos += size
        elif reply.chunk_delay > 0:
            pos = 0
            for match in _EVENT_END.finditer(payload):
                yield payload[pos : match.end()]
                pos = match.end()
            if pos < len(payload):
                yield payload[pos:]
        elif payload:
            yield payload

    @classmethod
    def _plan(cls, reply: Reply, payload: bytes) -> list[tuple[float, bytes]]:
        """The body writes: (seconds to pause before, bytes), cut at the stall offset."""
        delay = reply.split_delay if reply.split is not None else reply.chunk_delay
        plan: list[tuple[float, bytes]] = []
        pos = 0
        for index, piece in enumerate(cls._pieces(reply, payload)):
            pause = delay if index else 0.0
            inside = -1 if reply.stall_after is None else reply.stall_after - pos
            if 0 < inside < len(piece):
                plan += [(pause, piece[:inside]), (0.0, piece[inside:])]
            else:
                plan.append((pause, piece))
            pos += len(piece)
        return plan

    async def _write_body(self, conn: _Connection, reply: Reply, payload: bytes) -> bool:
        """Write the body bytes (not the chunked terminator); False if the client left."""
        chunked = reply.framing == "chunked"
        stall_pending = reply.stall_after is not None
        sent = 0
        for pause, piece in [*self._plan(reply, payload), (0.0, b"")]:
            if stall_pending and sent == reply.stall_after:
                stall_pending = False
                if await self._pause(conn, reply.stall_seconds):
                    return False
            if not piece:  # the end marker of the plan
                break
            if await self._pause(conn, pause):
                return False
            conn.writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await conn.writer.drain()
            sent += len(piece)
        return not conn.gone.is_set()

    async def _send_reply(
        self, conn: _Connection, record: RecordedRequest, reply: Reply, client_keep_alive: bool
    ) -> bool:
        """Write one reply; returns whether the connection may carry another request."""
        if await self._pause(conn, reply.headers_delay):
            record.closed_early = True
            return False
        if reply.drop_connection is not None:
            conn.reset = reply.drop_connection == "reset"
            return False

        payload = reply.body[: reply.sent_length]
        cut = reply.cut if reply.cut_after is not None else None
        declared = len(payload) if cut == "clean" else len(reply.body)
        announce_close = reply.framing == "close" or not client_keep_alive
        conn.writer.write(self._head(reply, declared, announce_close))
        await conn.writer.drain()
        if not await self._write_body(conn, reply, payload):
            record.closed_early = True
            return False

        if cut == "reset":
            conn.reset = True
            return False
        if cut == "abort" or reply.framing == "close":
            return False
        if reply.framing == "chunked":
            conn.writer.write(b"0\r\n\r\n")
            await conn.writer.drain()
        return client_keep_alive
