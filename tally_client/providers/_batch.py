"""Batch API wire shapes: OpenAI Batch, Anthropic Message Batches, Gemini batch mode.

No I/O. Each operation is a generator (a sans-I/O flow) that yields the `HttpCall`s to make
and receives each `HttpReply`, so one codec serves the sync and the async job. Lines are the
bodies the provider's own `build_request(spec, model, stream=False)` builds, and result
bodies are decoded by its `decode_body`, so a batch Response is an atomic Response.

Sources:
- OpenAI: `POST /files` (multipart, purpose=batch), `POST /batches` {input_file_id, endpoint,
  completion_window: "24h"}, `GET /batches/{id}`, `POST /batches/{id}/cancel`, `GET
  /files/{id}/content`; output/error lines `{"id", "custom_id", "response": {"status_code",
  "request_id", "body"}, "error"}` in no order (openai-python `types/batch.py`,
  `batch_create_params.py`; the BatchRequestOutput schema).
- Anthropic: `POST /v1/messages/batches` {"requests": [{"custom_id", "params"}]}, `GET
  /v1/messages/batches/{id}` (`processing_status` in_progress | canceling | ended,
  `request_counts`, `results_url`), `POST .../cancel`; result lines `{"custom_id", "result":
  {"type": "succeeded" | "errored" | "canceled" | "expired", "message" | "error"}}`
  (anthropic-sdk-python `types/messages/message_batch*.py`).
- Gemini: `POST {version}/models/{model}:batchGenerateContent` {"batch": {"displayName",
  "inputConfig": {"requests": {"requests": [{"request", "metadata": {"key"}}]}}}} returns an
  Operation `batches/{id}`; `GET {version}/batches/{id}` (`metadata.state` BATCH_STATE_*,
  `response.inlinedResponses.inlinedResponses`: `{"response" | "error", "metadata"}` in input
  order), `POST ...:cancel` (python-genai `batches.py`; ai.google.dev/api/batch-mode).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import ConfigurationError, ProtocolError, ProviderError
from .._request import WireRequest
from ._base import Provider, in_stream_error

__all__ = [
    "BatchCodec",
    "BatchLine",
    "BatchState",
    "BatchStatus",
    "HttpCall",
    "HttpReply",
    "batch_codec",
]

BatchState = Literal[
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
]
"""A batch's status, in OpenAI's words (the other providers' states map onto them)."""

ENDED: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request a flow asks for. `headers` may hold a key: left out of repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True)
class HttpReply:
    """What came back: status, headers, body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class BatchStatus:
    """A batch job as last read from the provider.

    Attributes:
        id: the provider's job id ("batch_...", "msgbatch_...", "batches/...").
        state: the status, normalized to OpenAI's names (see `BatchState`).
        total: requests in the job, when known.
        succeeded: requests that succeeded so far, when known.
        failed: requests that failed (errored, expired or cancelled) so far, when known.
        raw: the provider's job object.
    """

    id: str
    state: BatchState
    total: int | None
    succeeded: int | None
    failed: int | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def ended(self) -> bool:
        """True once the job will change no more (completed, failed, expired, cancelled)."""
        return self.state in ENDED


@dataclass(frozen=True)
class BatchLine:
    """One request's outcome: the provider's atomic response body, or an error."""

    custom_id: str
    body: Any = None
    error: ProviderError | None = None


class BatchItemError(ProviderError):
    """One request of a batch did not succeed: errored, expired or cancelled.

    Attributes:
        reason: "errored", "expired" or "cancelled".
    """

    def __init__(self, message: str, *, provider: str | None, reason: str) -> None:
        super().__init__(message, provider=provider, retryable=reason != "errored")
        self.reason = reason


Flow = Generator[HttpCall, HttpReply, Any]


def expect_json(provider: Provider, reply: HttpReply) -> Any:
    """The JSON body of a 2xx reply.

    Raises:
        APIStatusError: a non-2xx reply, typed by its status and error body.
        ProtocolError: a 2xx reply that is not JSON.
    """
    if not 200 <= reply.status < 300:
        raise provider.error_from_response(reply.status, reply.body, reply.headers)
    try:
        return json.loads(reply.body)
    except ValueError:
        raise ProtocolError(
            f"expected a JSON body, got {reply.body[:200]!r}", provider=provider.label
        ) from None


def expect_ok(provider: Provider, reply: HttpReply) -> bytes:
    """The body of a 2xx reply (raises like `expect_json` otherwise)."""
    if not 200 <= reply.status < 300:
        raise provider.error_from_response(reply.status, reply.body, reply.headers)
    return reply.body


def _jsonl(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


class BatchCodec:
    """The batch protocol of one provider. Subclasses implement the four flows."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def submit(self, items: Sequence[tuple[str, WireRequest]], model: str) -> Flow:
        """Create a job from (custom_id, the atomic request) pairs; returns a BatchStatus."""
        raise NotImplementedError

    def get(self, batch_id: str) -> Flow:
        """Read a job; returns a BatchStatus."""
        raise NotImplementedError

    def cancel(self, batch_id: str) -> Flow:
        """Ask to cancel a job; returns a BatchStatus."""
        raise NotImplementedError

    def results(self, status: BatchStatus) -> Flow:
        """The lines of an ended job; returns a list of BatchLine."""
        raise NotImplementedError


class OpenAIBatch(BatchCodec):
    """OpenAI's Batch API (file upload + /batches), for Chat Completions or Responses."""

    def __init__(self, provider: Provider, path: str) -> None:
        super().__init__(provider)
        self.path = path  # "/chat/completions" or "/responses"

    def _url(self, path: str) -> str:
        return self.provider.endpoint(path)

    def _endpoint(self) -> str:
        # The batch names the endpoint as a path from the API root, e.g. /v1/chat/completions.
        return "/v1" + self.path

    def submit(self, items: Sequence[tuple[str, WireRequest]], model: str) -> Flow:
        endpoint = self._endpoint()
        lines = [
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": endpoint, "body": dict(wire.json)},
                ensure_ascii=False,
            )
            for cid, wire in items
        ]
        content = ("\n".join(lines) + "\n").encode()
        headers = self.provider.request_headers()
        reply = yield HttpCall(
            "POST",
            self._url("/files"),
            headers,
            files={"file": ("batch.jsonl", content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = expect_json(self.provider, reply)["id"]
        reply = yield HttpCall(
            "POST",
            self._url("/batches"),
            headers,
            json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"},
        )
        return self.status(expect_json(self.provider, reply))

    def get(self, batch_id: str) -> Flow:
        headers = self.provider.request_headers()
        reply = yield HttpCall("GET", self._url(f"/batches/{batch_id}"), headers)
        return self.status(expect_json(self.provider, reply))

    def cancel(self, batch_id: str) -> Flow:
        headers = self.provider.request_headers()
        reply = yield HttpCall("POST", self._url(f"/batches/{batch_id}/cancel"), headers)
        return self.status(expect_json(self.provider, reply))

    def status(self, raw: Mapping[str, Any]) -> BatchStatus:
        """Read an OpenAI Batch object."""
        counts = raw.get("request_counts") or {}
        return BatchStatus(
            id=raw["id"],
            state=raw["status"],
            total=counts.get("total"),
            succeeded=counts.get("completed"),
            failed=counts.get("failed"),
            raw=raw,
        )

    def results(self, status: BatchStatus) -> Flow:
        headers = self.provider.request_headers()
        out: list[BatchLine] = []
        for key in ("output_file_id", "error_file_id"):
            file_id = status.raw.get(key)
            if not file_id:
                continue
            reply = yield HttpCall("GET", self._url(f"/files/{file_id}/content"), headers)
            out.extend(self.line(d) for d in _jsonl(expect_ok(self.provider, reply)))
        if not out and status.state == "failed":
            errors = (status.raw.get("errors") or {}).get("data") or []
            shown = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors[:5] if e)
            raise ProviderError(
                f"batch {status.id} failed validation: {shown or 'no detail'}",
                provider=self.provider.label,
                retryable=False,
            )
        return out

    def line(self, data: Mapping[str, Any]) -> BatchLine:
        """One output or error file line."""
        cid = str(data.get("custom_id"))
        response = data.get("response") or {}
        error = data.get("error")
        status = response.get("status_code")
        body = response.get("body")
        if isinstance(body, str):  # Llama Stack writes the body as a JSON string
            with contextlib.suppress(ValueError):
                body = json.loads(body)
        if status == 200 and not error:
            return BatchLine(cid, body=body)
        label = self.provider.label
        if isinstance(status, int) and status >= 400:
            raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
            raw_bytes = raw if isinstance(raw, bytes) else raw.encode()
            typed = self.provider.error_from_response(status, raw_bytes, {})
            return BatchLine(cid, error=typed)
        code = error.get("code") if isinstance(error, Mapping) else None
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        reason = (
            "expired"
            if code == "batch_expired"
            else ("cancelled" if code == "batch_cancelled" else "errored")
        )
        return BatchLine(
            cid, error=BatchItemError(f"{code}: {message}", provider=label, reason=reason)
        )


_ANTHROPIC_STATES: dict[str, BatchState] = {
    "in_progress": "in_progress",
    "canceling": "cancelling",
    "ended": "completed",
}


class AnthropicBatch(BatchCodec):
    """Anthropic Message Batches: the requests go inline; results are a JSONL at results_url."""

    def _headers(self) -> dict[str, str]:
        from .anthropic import API_VERSION

        return self.provider.request_headers(**{"anthropic-version": API_VERSION})

    def submit(self, items: Sequence[tuple[str, WireRequest]], model: str) -> Flow:
        requests = [{"custom_id": cid, "params": dict(wire.json)} for cid, wire in items]
        reply = yield HttpCall(
            "POST",
            f"{self.provider.base_url}/v1/messages/batches",
            self._headers(),
            json={"requests": requests},
        )
        return self.status(expect_json(self.provider, reply))

    def get(self, batch_id: str) -> Flow:
        url = f"{self.provider.base_url}/v1/messages/batches/{batch_id}"
        reply = yield HttpCall("GET", url, self._headers())
        return self.status(expect_json(self.provider, reply))

    def cancel(self, batch_id: str) -> Flow:
        url = f"{self.provider.base_url}/v1/messages/batches/{batch_id}/cancel"
        reply = yield HttpCall("POST", url, self._headers())
        return self.status(expect_json(self.provider, reply))

    def status(self, raw: Mapping[str, Any]) -> BatchStatus:
        """Read an Anthropic MessageBatch object."""
        counts = raw.get("request_counts") or {}
        state = _ANTHROPIC_STATES.get(raw.get("processing_status", ""), "in_progress")
        failed = sum(counts.get(k, 0) for k in ("errored", "canceled", "expired"))
        total = sum(counts.get(k, 0) for k in ("processing", "succeeded")) + failed
        return BatchStatus(
            id=raw["id"],
            state=state,
            total=total if counts else None,
            succeeded=counts.get("succeeded"),
            failed=failed if counts else None,
            raw=raw,
        )

    def results(self, status: BatchStatus) -> Flow:
        url = status.raw.get("results_url")
        if not url:
            return []
        reply = yield HttpCall("GET", url, self._headers())
        return [self.line(d) for d in _jsonl(expect_ok(self.provider, reply))]

    def line(self, data: Mapping[str, Any]) -> BatchLine:
        """One results line."""
        cid = str(data.get("custom_id"))
        result = data.get("result") or {}
        kind = result.get("type")
        label = self.provider.label
        if kind == "succeeded":
            return BatchLine(cid, body=result.get("message"))
        if kind == "errored":
            return BatchLine(cid, error=in_stream_error(label, result.get("error") or {}))
        reason = (
            "cancelled" if kind == "canceled" else "expired" if kind == "expired" else "errored"
        )
        return BatchLine(
            cid, error=BatchItemError(f"the request was {reason}", provider=label, reason=reason)
        )


_GEMINI_STATES: dict[str, BatchState] = {
    "PENDING": "validating",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}


class GeminiBatch(BatchCodec):
    """Gemini batch mode with inline requests (under 20 MB); responses come back inline."""

    def _root(self) -> str:
        version: str = getattr(self.provider, "api_version", "v1beta")
        return f"{self.provider.base_url}/{version}"

    def submit(self, items: Sequence[tuple[str, WireRequest]], model: str) -> Flow:
        resource = model if "/" in model else f"models/{model}"
        requests = [{"request": dict(wire.json), "metadata": {"key": cid}} for cid, wire in items]
        body = {
            "batch": {
                "displayName": f"tally_client-{len(requests)}",
                "inputConfig": {"requests": {"requests": requests}},
            }
        }
        reply = yield HttpCall(
            "POST",
            f"{self._root()}/{resource}:batchGenerateContent",
            self.provider.request_headers(),
            json=body,
        )
        return self.status(expect_json(self.provider, reply))

    def get(self, batch_id: str) -> Flow:
        reply = yield HttpCall("GET", f"{self._root()}/{batch_id}", self.provider.request_headers())
        return self.status(expect_json(self.provider, reply))

    def cancel(self, batch_id: str) -> Flow:
        url = f"{self._root()}/{batch_id}:cancel"
        reply = yield HttpCall("POST", url, self.provider.request_headers())
        expect_json(self.provider, reply)
        return (yield from self.get(batch_id))

    def status(self, raw: Mapping[str, Any]) -> BatchStatus:
        """Read a batch Operation (`metadata` holds the GenerateContentBatch)."""
        meta = raw.get("metadata") or {}
        name = str(raw.get("name") or meta.get("name"))
        state_name = str(meta.get("state", "")).rsplit("_", 1)[-1]
        state = _GEMINI_STATES.get(state_name, "in_progress")
        if raw.get("done") and state in ("validating", "in_progress"):
            state = "failed" if raw.get("error") else "completed"
        stats = meta.get("batchStats") or {}

        def count(key: str) -> int | None:
            value = stats.get(key)
            return int(value) if value is not None else None

        return BatchStatus(
            id=name,
            state=state,
            total=count("requestCount"),
            succeeded=count("successfulRequestCount"),
            failed=count("failedRequestCount"),
            raw=raw,
        )

    def results(self, status: BatchStatus) -> Flow:
        response = status.raw.get("response") or {}
        output = response.get("output") or response
        inlined = output.get("inlinedResponses") or {}
        if isinstance(inlined, Mapping):
            inlined = inlined.get("inlinedResponses") or []
        if not inlined and status.state == "failed":
            error = status.raw.get("error") or {}
            raise ProviderError(
                f"batch {status.id} failed: {error.get('message', 'no detail')}",
                provider=self.provider.label,
                retryable=False,
            )
        out: list[BatchLine] = []
        for position, item in enumerate(inlined):
            # The key we sent comes back in metadata; when it does not, the order does.
            cid = str((item.get("metadata") or {}).get("key") or f"item-{position}")
            if item.get("error"):
                out.append(
                    BatchLine(cid, error=in_stream_error(self.provider.label, item["error"]))
                )
            else:
                out.append(BatchLine(cid, body=item.get("response")))
        return out
        yield  # a generator, though it needs no request


def batch_codec(provider: Provider) -> BatchCodec:
    """The batch protocol for a provider.

    Raises:
        ConfigurationError: the provider's protocol has no batch API here.
    """
    protocol = provider.protocol
    if protocol == "openai-chat":
        return OpenAIBatch(provider, "/chat/completions")
    if protocol == "openai-responses":
        return OpenAIBatch(provider, "/responses")
    if protocol == "anthropic":
        return AnthropicBatch(provider)
    if protocol == "gemini":
        return GeminiBatch(provider)
    raise ConfigurationError(
        f"provider {provider.label!r} ({protocol}) has no batch API: use map() instead"
    )
