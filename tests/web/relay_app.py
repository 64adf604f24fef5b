"""A minimal app around `sse_response()` for the tests: one route, options given per test."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally_client import AsyncClient, AsyncStream, AsyncToolRun, Client, Stream, ToolRun
from tally_client.web import RelayResult, sse_response


def relay_app(
    make_stream: Callable[[], AsyncStream | Stream | AsyncToolRun | ToolRun],
    results: list[RelayResult],
    **options: Any,
) -> Starlette:
    """POST /relay relays `make_stream()`; GET /control sends `control_body` without our headers."""

    async def relay(request: Request) -> Response:
        await request.body()
        return sse_response(make_stream(), on_done=results.append, **options)

    return Starlette(routes=[Route("/relay", relay, methods=["POST", "GET"])])


def noticing_leave(app: ASGIApp, left: threading.Event) -> ASGIApp:
    """`app`, setting `left` when the server hands it `http.disconnect` (the browser left).

    The relay's watcher cancels the body in the same step as that `receive()` returns, so once
    `left` is set the stop is under way: no waiting on the server's pace.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                left.set()
            return message

        await app(scope, watched, send)

    return wrapped


def parse_sse(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) per SSE event; comments (pings) are returned as ("comment", text)."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not block:
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


def vercel_parts(raw: bytes) -> list[dict[str, Any]]:
    """The parts of a Vercel UI message stream ([DONE] as {"type": "[DONE]"})."""
    parts = []
    for name, data in parse_sse(raw):
        if name == "comment":
            continue
        parts.append({"type": "[DONE]"} if data == "[DONE]" else json.loads(data))
    return parts


def post(base: str, timeout: float = 30) -> httpx.Response:
    with httpx.Client(timeout=timeout) as http:
        return http.post(base + "/relay", json={})


class LazyClient:
    """An AsyncClient made on first use, inside the server's event loop (httpx binds to it)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self._client: AsyncClient | None = None

    def stream(self, prompt: str = "hi", **call: Any) -> AsyncStream:
        if self._client is None:
            self._client = AsyncClient(base_url=self.url + "/v1", **self.options)
        return self._client.stream(prompt, **call)

    def sync_stream(self, prompt: str = "hi", **call: Any) -> Stream:
        return Client(base_url=self.url + "/v1", **self.options).stream(prompt, **call)

    def tool_run(self, prompt: str = "Weather in Paris?", **call: Any) -> AsyncToolRun:
        if self._client is None:
            self._client = AsyncClient(base_url=self.url + "/v1", **self.options)
        return self._client.run_tools(prompt, consumer="human", **call)

    def sync_tool_run(self, prompt: str = "Weather in Paris?", **call: Any) -> ToolRun:
        client = Client(base_url=self.url + "/v1", **self.options)
        return client.run_tools(prompt, consumer="human", **call)


__all__ = [
    "LazyClient",
    "StreamingResponse",
    "noticing_leave",
    "parse_sse",
    "post",
    "relay_app",
    "vercel_parts",
]


@contextlib.contextmanager
def guide_snippet(
    after: str, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[types.ModuleType]:
    """The first Python block of docs/web.md after the text `after` ("" for the first block),
    run as a module whose default client reaches `base_url` (keys of real providers unset)."""
    guide = (Path(__file__).parents[2] / "docs" / "web.md").read_text()
    section = guide.split(after, 1)[1] if after else guide
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("TALLY_LOCAL_BASE_URL", base_url)
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    name = "".join(c if c.isalnum() else "_" for c in after.lower()).strip("_")
    module = types.ModuleType(f"web_guide_snippet_{name}")
    sys.modules[module.__name__] = module  # pydantic resolves the annotations through it
    try:
        exec(compile(snippet, "docs/web.md", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]
