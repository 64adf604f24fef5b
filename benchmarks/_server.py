"""A loopback SSE server for the benchmarks, run in a process of its own.

It frames streams as real providers do: chunked transfer encoding with one HTTP chunk per SSE
event (`chunked`), or, as a second case, the whole body behind a Content-Length
(`content-length`). Bodies are built once per (format, framing, events) and written in one
`write()` per response, so the server costs little next to the client being measured, and it
runs in its own process so it neither holds the client's GIL nor counts in its memory.

The URL path chooses the stream: `/{format}/{framing}/{events}/...`, where format is
`openai-chat` (Chat Completions chunks, then a usage chunk and `[DONE]`) or `anthropic`
(Messages events). Whatever follows (`/v1/chat/completions`, `/v1/messages`) is ignored, so a
client's base URL is `server.url(...)` plus the `/v1` its protocol expects.

    with LoopbackServer() as server:
        base = server.url("openai-chat", "chunked", 20_000) + "/v1"
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
import subprocess
import sys
from types import TracebackType

from ._common import ROOT

FORMATS = ("openai-chat", "anthropic")
FRAMINGS = ("chunked", "content-length")


def openai_chat_events(n: int) -> list[bytes]:
    """A Chat Completions stream: n text chunks, the finish chunk, usage, then [DONE]."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    events = [
        f'data: {head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
        f'"finish_reason":null}}]}}\n\n'
    ]
    events += [
        f'data: {head}"choices":[{{"index":0,"delta":{{"content":"tok{i} "}},'
        f'"finish_reason":null}}]}}\n\n'
        for i in range(n)
    ]
    events.append(
        f'data: {head}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}\n\n'
    )
    usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": n + 5}
    events.append(f'data: {head}"choices":[],"usage":{json.dumps(usage)}}}\n\n')
    events.append("data: [DONE]\n\n")
    return [e.encode() for e in events]


def anthropic_events(n: int) -> list[bytes]:
    """A Messages stream: message_start, one text block of n deltas, message_delta, stop."""

    def event(name: str, data: dict[str, object]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    message: dict[str, object] = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "bench",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    events = [
        event("message_start", {"type": "message_start", "message": message}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event("ping", {"type": "ping"}),
    ]
    events += [
        event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"tok{i} "},
            },
        )
        for i in range(n)
    ]
    events += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return events


@functools.cache
def response_bytes(fmt: str, framing: str, n: int) -> bytes:
    """The whole HTTP response (head and body) for one stream."""
    events = openai_chat_events(n) if fmt == "openai-chat" else anthropic_events(n)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    if framing == "chunked":
        body = b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
        return head + b"transfer-encoding: chunked\r\n\r\n" + body
    body = b"".join(events)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            parts = request_line.split(" ")[1].strip("/").split("/")
            try:
                fmt, framing, n = parts[0], parts[1], int(parts[2])
                if fmt not in FORMATS or framing not in FRAMINGS:
                    raise ValueError(fmt, framing)
            except (IndexError, ValueError):
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            else:
                writer.write(response_bytes(fmt, framing, n))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def raise_file_limit() -> None:
    """Allow as many open sockets as the hard limit does (1,000 streams need over 1,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve() -> None:
    raise_file_limit()
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class LoopbackServer:
    """The server in a child process; stops when the `with` block ends."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def url(self, fmt: str, framing: str, events: int) -> str:
        """The base URL of one kind of stream (add the `/v1` the protocol expects)."""
        return f"http://127.0.0.1:{self.port}/{fmt}/{framing}/{events}"

    def close(self) -> None:
        """Stop the server process."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    asyncio.run(_serve())
