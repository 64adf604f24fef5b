"""A chat page on the local model: FastAPI, one HTML page, plain JS, a stop button.

    make chat            # provisions the local model once, then serves http://127.0.0.1:8000

Or with a server you already run: `python examples/chat_web/app.py --base-url URL [--port N]`.

Two endpoints relay the same call in the two wire formats of `tally_client.web`:

- `POST /api/chat/events` (`protocol="events"`), used by the page in this directory;
- `POST /api/chat` (`protocol="vercel-ai"`), which a React app's `useChat` reads unchanged.

Each relay's result (state, output tokens, tokens not generated after a stop) is logged and
kept in `app.state.results` (the tests read it).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.responses import StreamingResponse

from tally_client import AsyncClient
from tally_client.web import RelayResult, sse_response

PAGE = Path(__file__).with_name("index.html")
MAX_TOKENS = 400


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    """What the page sends: the conversation so far."""

    messages: list[ChatMessage]


class UIChatRequest(BaseModel):
    """What `useChat` sends (Vercel AI SDK): UI messages made of parts."""

    messages: list[dict[str, Any]]


def ui_to_chat(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """UI messages (`{role, parts: [{type: "text", text}]}`) to chat messages."""
    out = []
    for message in messages:
        text = "".join(
            p.get("text", "") for p in message.get("parts", []) if p.get("type") == "text"
        )
        out.append({"role": message["role"], "content": text})
    return out


def create_app(
    client: AsyncClient, *, max_tokens: int = MAX_TOKENS, smooth: float | None = None
) -> FastAPI:
    """The chat app around a client (the tests point it at a replay server or the local model)."""
    app = FastAPI(title="tally_client chat")
    app.state.results = []

    def record(result: RelayResult) -> None:
        app.state.results.append(result)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(PAGE)

    @app.post("/api/chat/events")
    async def chat_events(body: ChatRequest) -> StreamingResponse:
        messages = [m.model_dump() for m in body.messages]
        stream = client.stream(messages, consumer="human", max_tokens=max_tokens)
        return sse_response(stream, protocol="events", smooth=smooth, on_done=record)

    @app.post("/api/chat")
    async def chat_vercel(body: UIChatRequest) -> StreamingResponse:
        stream = client.stream(ui_to_chat(body.messages), consumer="human", max_tokens=max_tokens)
        return sse_response(stream, protocol="vercel-ai", smooth=smooth, on_done=record)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--base-url", help="an OpenAI-compatible server (default: start the local model)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    server = None
    base_url = args.base_url
    if base_url is None:
        from tally_client.testing.llama import LlamaServer

        server = LlamaServer.start()
        base_url = server.base_url
    try:
        client = AsyncClient(base_url=base_url)
        print(f"chat page: http://127.0.0.1:{args.port}/ (model at {base_url}; Ctrl-C stops)")
        uvicorn.run(create_app(client), host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
