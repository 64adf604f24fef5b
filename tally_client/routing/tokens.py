"""Counting a call's input tokens before it is sent, where the provider can count them.

The envelope's estimate is characters / 4 (the usual English figure; see `build_envelope`).
It can be far off (code, non-Latin scripts, numbers), and it decides whether a model's
context window holds the call. So when the estimate comes near a candidate's window
(`NEAR_LIMIT` of it), the client asks the provider to count, where the provider has a count
endpoint: llama-server's `POST /tokenize` (`{"content": text}` -> `{"tokens": [...]}`,
llama.cpp tools/server README), at the server root for an OpenAI-compatible endpoint that is
not api.openai.com. The text goes only to the provider that will receive it anyway, never to
a router. Any failure keeps the estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._decision import ModelSpec
from .._envelope import Envelope

if TYPE_CHECKING:
    import httpx

    from ..providers._base import Provider

__all__ = ["NEAR_LIMIT", "PER_MESSAGE_TOKENS", "count_async", "count_sync", "tokenize_url"]

NEAR_LIMIT = 0.75
"""Count exactly when the estimate plus the expected output reaches this share of a window."""
PER_MESSAGE_TOKENS = 4
"""Tokens added per message for the chat template's role markers (an estimate)."""
TIMEOUT = 2.0


def near_limit(envelope: Envelope, models: Sequence[ModelSpec]) -> bool:
    """Whether the estimate comes close enough to some model's window to be worth a count."""
    size = envelope.context_tokens + (envelope.expected_output_tokens or 0)
    return any(size >= NEAR_LIMIT * m.context_window for m in models)


def tokenize_url(provider: Provider) -> str | None:
    """The count endpoint of a provider, or None: llama-server's `/tokenize` for an
    OpenAI-compatible (non-OpenAI) Chat Completions endpoint."""
    from ..providers.openai_chat import OpenAIChatProvider

    if not isinstance(provider, OpenAIChatProvider) or provider.official:
        return None
    root = provider.base_url
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/tokenize"


def _text(messages: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "\n".join(parts)


def _tokens(reply: httpx.Response, messages: Sequence[Mapping[str, Any]]) -> int | None:
    if reply.status_code != 200:
        return None
    try:
        tokens = reply.json().get("tokens")
    except ValueError:
        return None
    if not isinstance(tokens, list):
        return None
    return len(tokens) + PER_MESSAGE_TOKENS * len(messages)


def count_sync(
    http: httpx.Client, provider: Provider, messages: Sequence[Mapping[str, Any]]
) -> int | None:
    """The provider's count of the messages' tokens, or None where it cannot count."""
    import httpx

    url = tokenize_url(provider)
    if url is None:
        return None
    try:
        reply = http.post(url, json={"content": _text(messages)}, timeout=TIMEOUT)
    except httpx.HTTPError:
        return None
    return _tokens(reply, messages)


async def count_async(
    http: httpx.AsyncClient, provider: Provider, messages: Sequence[Mapping[str, Any]]
) -> int | None:
    """`count_sync`, without blocking the event loop."""
    import httpx

    url = tokenize_url(provider)
    if url is None:
        return None
    try:
        reply = await http.post(url, json={"content": _text(messages)}, timeout=TIMEOUT)
    except httpx.HTTPError:
        return None
    return _tokens(reply, messages)
