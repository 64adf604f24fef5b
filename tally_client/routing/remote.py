"""Step 5: the hosted Tally router, with the embedded router as its fallback.

Wire (../shared/reference/tally-router-api.md; the hosted API is only partly public):
`POST {TALLY_BASE_URL}/route` with `Authorization: Bearer $TALLY_API_KEY` and a JSON body
`{"semantic_envelope": ..., "available_models": [...], "available_tools": []}` (the body
shape and the path are those of the only known live client, TallyTestClient; the envelope
either the site's protocol "2" or that client's schema "1.0": `wire="v2"` or `"v1"`). The
answer's `recommended_model` and `exploration_flag` are documented on tallyy.org/docs.html;
`confidence_score` and `decision_trace` come from the live client; a streaming flag exists
(tallyy.org/streaming.html) under an unknown name, so `stream`, `stream_recommended` and
`streaming` are all read; a decision id is read from `decision_id` or `id` when present.

The hosted router is advisory: every failure of it (a transport error: refused, reset,
timed out; a non-2xx status; an answer that is not JSON, not an object, larger than
`MAX_ANSWER_BYTES`, or recommends a model outside the configured ones) falls back to the
embedded router, recorded on the Decision (`source="fallback"`, the first reason saying why),
and is never raised. Anything else that goes wrong is a bug of ours and is raised.

`timeout` is one budget for the whole decision: connecting, sending, the headers and the body
together. Sync, every socket operation is bounded by the time left (`_transport.DEADLINE`), so
a server that trickles bytes cannot stretch it; async, the request runs in a cancel scope.
With a transport passed in (tests), or httpx's own (kept when the environment names a proxy),
the sync path can bound only each phase and the time between body chunks by what is left.
DNS resolution is not interruptible. Only envelope fields, model ids, counts and flags are
sent: never a prompt, a message, a tool schema or output text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from .._decision import NO_CHOICE, CallerChoice, Confidence, Decision, ModelSpec, Outcome
from .._envelope import Envelope
from .._errors import ConfigurationError, MissingAPIKeyError
from .choice import candidates, needed_quality
from .router import EmbeddedRouter
from .rules import LONG_OUTPUT_TOKENS, delivery

if TYPE_CHECKING:
    import httpx

    from .telemetry import Telemetry

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "TallyRouter",
    "WireFormat",
    "envelope_wire",
    "route_body",
]

log = logging.getLogger("tally_client.routing")

API_KEY_ENV = "TALLY_API_KEY"
BASE_URL_ENV = "TALLY_BASE_URL"
DEFAULT_BASE_URL = "https://api.tallyy.org"
WireFormat = Literal["v2", "v1"]

_V1_TASKS = (
    ("code", "code"),
    ("creative", "creative"),
    ("summar", "synthesis"),
    ("qa", "retrieval"),
    ("classif", "classification"),
    ("extract", "retrieval"),
    ("math", "math"),
    ("agent", "agentic"),
)
_V1_BUCKETS = {"short": "small", "medium": "medium", "long": "large", "extended": "xlarge"}
_V1_OUTPUT = {"<2k": "small", "2k-8k": "medium", "8k-32k": "large", "32k+": "xlarge"}


def envelope_wire(envelope: Envelope, wire: WireFormat) -> dict[str, Any]:
    """The envelope in a wire format: "v2" (tallyy.org, protocol "2") or "v1" (schema "1.0").

    v1's fields come from TallyTestClient (task_type classification|reasoning|creative|code|
    math|retrieval|synthesis|agentic, structure_type qa|multi-step|tool-call-heavy|long-form,
    complexity_score 0.1-1.0, size buckets small|medium|large|xlarge, determinism_required,
    capability_tags); the mapping from ours is tally_client's.
    """
    if wire == "v2":
        return envelope.to_wire()
    task = envelope.task_type or ""
    v1_task = next((v for prefix, v in _V1_TASKS if task.startswith(prefix)), "reasoning")
    n = envelope.expected_output_tokens or 0
    if envelope.tools_used:
        structure = "tool-call-heavy"
    elif n >= LONG_OUTPUT_TOKENS:
        structure = "long-form"
    else:
        structure = "qa"
    tags = [
        t
        for t, on in (
            ("json", envelope.structure_type == "json"),
            ("tools", envelope.tools_used > 0),
        )
        if on
    ]
    return {
        "schema_version": "1.0",
        "task_type": v1_task,
        "structure_type": structure,
        "complexity_score": round(0.1 + 0.3 * (needed_quality(envelope) - 1), 2),
        "context_length_bucket": _V1_BUCKETS[envelope.context_length],
        "estimated_tokens_bucket": _V1_OUTPUT.get(envelope.estimated_tokens or "<2k", "small"),
        "determinism_required": envelope.structure_type == "json",
        "capability_tags": tags,
    }


def route_body(envelope: Envelope, models: Sequence[str], wire: WireFormat) -> dict[str, Any]:
    """The JSON body of `POST /route`."""
    return {
        "semantic_envelope": envelope_wire(envelope, wire),
        "available_models": list(models),
        "available_tools": [],
    }


class _Unusable(Exception):
    """The hosted router's answer cannot be used; the message says why."""


class _TimedOut(_Unusable):
    """No whole answer within the time budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s")


MAX_ANSWER_BYTES = 64 * 1024
"""The largest route answer read; a larger one is unusable (a decision is a few hundred bytes)."""


def _phases(deadline: float) -> httpx.Timeout:
    """httpx's per-phase limits, each the time left before `deadline` (a safety net: the
    deadline itself is kept by `DEADLINE` in sync, by a cancel scope in async)."""
    import httpx

    return httpx.Timeout(max(0.0, deadline - time.monotonic()))


def _take(content: bytearray, chunk: bytes, deadline: float, budget: float) -> None:
    """Append one chunk of the answer, or raise `_Unusable` past the budget or the size cap."""
    content += chunk
    if len(content) > MAX_ANSWER_BYTES:
        raise _Unusable(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    if time.monotonic() > deadline:
        raise _TimedOut(budget)


def _check_url(url: str) -> None:
    import httpx

    try:
        parsed = httpx.URL(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.host)
    except httpx.InvalidURL:
        ok = False
    if not ok:
        raise ConfigurationError(f"the hosted router's base URL must be http(s)://..., got {url!r}")


def _field(data: Mapping[str, Any], *names: str) -> Any:
    return next((data[n] for n in names if n in data), None)


class TallyRouter:
    """The hosted Tally router, advisory, with the embedded router as its fallback.

    Args:
        api_key: default $TALLY_API_KEY.
        base_url: default $TALLY_BASE_URL, else https://api.tallyy.org.
        wire: the envelope/telemetry wire format: "v2" (tallyy.org's protocol "2", default)
            or "v1" (schema "1.0", as the known live client sends).
        timeout: seconds the whole route request may take (connect, send, headers and body
            together) before the embedded router decides instead.
        fallback: the embedded router used on any failure (default: a learning one).
        telemetry: send an outcome to `/telemetry` after every call (default True).
        telemetry_queue: outcomes waiting at most; beyond that they are dropped, never waited on.
        transport, async_transport: httpx transports (tests); default: real sockets.

    Raises:
        MissingAPIKeyError: no key given and $TALLY_API_KEY is unset.
        ConfigurationError: the base URL is not an http(s) URL.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        wire: WireFormat = "v2",
        timeout: float = 1.0,
        fallback: EmbeddedRouter | None = None,
        telemetry: bool = True,
        telemetry_queue: int = 1000,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise MissingAPIKeyError("tally", (API_KEY_ENV,))
        self._key = key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        _check_url(self.base_url)
        self.wire: WireFormat = wire
        self.timeout = timeout
        self.fallback = fallback if fallback is not None else EmbeddedRouter()
        self._transport = transport
        self._async_transport = async_transport
        self._http: httpx.Client | None = None
        self._ahttp: httpx.AsyncClient | None = None
        self._lock = threading.Lock()  # routes come from many threads (map() workers)
        self._envelopes: OrderedDict[str, Envelope] = OrderedDict()
        self.telemetry: Telemetry | None = None
        if telemetry:
            from .telemetry import Telemetry

            self.telemetry = Telemetry(
                self.base_url, key, wire, maxsize=telemetry_queue, transport=transport
            )

    def __repr__(self) -> str:
        return f"TallyRouter(base_url={self.base_url!r}, wire={self.wire!r})"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}

    # -- routing ---------------------------------------------------------------------------

    def _prepare(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice
    ) -> tuple[list[ModelSpec], bytes] | Decision:
        if choice.model is not None:  # nothing left for the hosted router to choose
            return self.fallback.route(envelope, models, choice)
        fits = candidates(envelope, models)  # ContextLengthError is the caller's, raised here
        import json

        body = json.dumps(route_body(envelope, [m.name for m in fits], self.wire)).encode()
        return fits, body

    def _sync_http(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._http is None:
                transport = self._transport
                if transport is None:
                    from .._transport import SupervisedTransport, env_proxies

                    # Ours keeps the deadline inside every socket operation; httpx's own is
                    # kept only where the environment names a proxy (it alone honours one).
                    if not env_proxies():
                        transport = SupervisedTransport(httpx.Limits())
                self._http = httpx.Client(transport=transport)
            return self._http

    def _async_http(self) -> httpx.AsyncClient:
        import httpx

        with self._lock:
            if self._ahttp is None:
                self._ahttp = httpx.AsyncClient(transport=self._async_transport)
            return self._ahttp

    def route(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        """Ask the hosted router (blocking, at most `timeout` s in all); see `Router.route`."""
        import httpx

        from .._transport import DEADLINE

        prepared = self._prepare(envelope, models, choice)
        if isinstance(prepared, Decision):
            return prepared
        fits, body = prepared
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            token = DEADLINE.set(deadline)  # bounds connect, TLS, write and every read
            try:
                with self._sync_http().stream(
                    "POST",
                    self.base_url + "/route",
                    content=body,
                    headers=self._headers,
                    timeout=_phases(deadline),
                ) as reply:
                    content = bytearray()
                    for chunk in reply.iter_bytes():
                        _take(content, chunk, deadline, self.timeout)
            finally:
                DEADLINE.reset(token)  # the fallback (and the call) run without it
            decision = self._read(reply.status_code, content, started, envelope, fits, choice)
        except (httpx.HTTPError, _Unusable) as exc:  # advisory: never raised into the call
            failure: Exception = exc
        else:
            self._remember(decision.id, envelope)
            return decision
        # Outside the handler: should the fallback raise, its context is not an httpx error
        # (whose request carries the Tally key).
        return self._fall_back(failure, envelope, models, choice)

    async def aroute(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        """`route` without blocking the event loop (an async request, cancelled at `timeout`)."""
        import anyio
        import httpx

        prepared = self._prepare(envelope, models, choice)
        if isinstance(prepared, Decision):
            return prepared
        fits, body = prepared
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            content = bytearray()
            status = 0
            with anyio.move_on_after(self.timeout):  # connect, send, headers and body alike
                async with self._async_http().stream(
                    "POST",
                    self.base_url + "/route",
                    content=body,
                    headers=self._headers,
                    timeout=_phases(deadline),
                ) as reply:
                    async for chunk in reply.aiter_bytes():
                        _take(content, chunk, deadline, self.timeout)
                    status = reply.status_code
            if not status:
                raise _TimedOut(self.timeout)
            decision = self._read(status, content, started, envelope, fits, choice)
        except (httpx.HTTPError, _Unusable) as exc:  # advisory: never raised into the call
            failure: Exception = exc
        else:
            self._remember(decision.id, envelope)
            return decision
        # Outside the handler: should the fallback raise, its context is not an httpx error
        # (whose request carries the Tally key).
        return self._fall_back(failure, envelope, models, choice)

    def _read(
        self,
        status: int,
        content: bytes | bytearray,
        started: float,
        envelope: Envelope,
        fits: list[ModelSpec],
        choice: CallerChoice,
    ) -> Decision:
        import json

        elapsed = time.monotonic() - started
        if elapsed > self.timeout:
            raise _TimedOut(self.timeout)
        if not 200 <= status < 300:
            raise _Unusable(f"HTTP {status}")
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            raise _Unusable("the answer is not JSON") from None
        if not isinstance(data, dict):
            raise _Unusable("the answer is not a JSON object")
        name = data.get("recommended_model")
        spec = next((m for m in fits if m.name == name), None)
        if spec is None:
            raise _Unusable(f"it recommended {name!r}, which is not among the configured models")
        conf = _field(data, "confidence_score", "confidence")
        model_conf = float(conf) if isinstance(conf, (int, float)) and 0 <= conf <= 1 else 0.5
        explored = data.get("exploration_flag") is True
        advice = _field(data, "stream", "stream_recommended", "streaming")
        stream, stream_conf, mode_reasons, phases = delivery(envelope, spec, choice.stream)
        if isinstance(advice, bool) and choice.stream is None:
            stream, stream_conf = advice, max(stream_conf, 0.7)
            mode_reasons = (
                "the hosted router advises " + ("streaming" if advice else "an atomic call"),
            )
        trace = data.get("decision_trace")
        said = f"{spec.name}: recommended by the hosted router"
        if explored:
            said += " (exploring: its confidence is low)"
        if isinstance(trace, str) and trace:
            said += f": {trace[:200]}"
        ident = _field(data, "decision_id", "id")
        extra: dict[str, Any] = {"id": ident} if isinstance(ident, str) and ident else {}
        return Decision(
            model=spec.name,
            provider=spec.provider,
            stream=stream,
            confidence=Confidence(round(model_conf, 3), stream_conf),
            reasons=(*mode_reasons, said),
            exploration=explored,
            phases=phases,
            source="caller" if choice.stream is not None else "remote",
            price=spec.price,
            shape=self.fallback_shape(envelope),
            **extra,
        )

    @staticmethod
    def fallback_shape(envelope: Envelope) -> str:
        from .learner import shape_key

        return shape_key(envelope)

    def _fall_back(
        self,
        exc: Exception,
        envelope: Envelope,
        models: Sequence[ModelSpec],
        choice: CallerChoice,
    ) -> Decision:
        import httpx

        if isinstance(exc, _Unusable):
            why = str(exc)
        elif isinstance(exc, httpx.TimeoutException):
            why = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        else:
            why = f"{type(exc).__name__}: {exc}"
        log.info("the hosted router could not be used (%s): the embedded router decided", why)
        decision = self.fallback.route(envelope, models, choice)
        decision = replace(
            decision,
            source="fallback",
            reasons=(
                f"the hosted router could not be used ({why}): the embedded router decided",
                *decision.reasons,
            ),
        )
        self._remember(decision.id, envelope)
        return decision

    def _remember(self, decision_id: str, envelope: Envelope) -> None:
        self._envelopes[decision_id] = envelope
        if len(self._envelopes) > 4096:
            self._envelopes.popitem(last=False)

    # -- outcomes --------------------------------------------------------------------------

    def record(
        self, decision: Decision, outcome: Outcome, envelope: Envelope | None = None
    ) -> None:
        """Learn locally (the fallback's learner) and queue the outcome for `/telemetry`.

        Never blocks: a full telemetry queue drops the outcome.
        """
        self.fallback.record(decision, outcome, envelope)
        if envelope is None:
            envelope = self._envelopes.get(decision.id)
        if self.telemetry is not None and envelope is not None:
            self.telemetry.send(decision, outcome, envelope)

    def close(self) -> None:
        """Flush telemetry (a few seconds at most), then close the connections."""
        if self.telemetry is not None:
            self.telemetry.close()
        self.fallback.close()
        if self._http is not None:
            self._http.close()

    async def aclose(self) -> None:
        """`close` (its flush waits in a worker thread, not on the event loop), also closing
        the async connection pool."""
        import anyio

        await anyio.to_thread.run_sync(self.close)
        if self._ahttp is not None:
            await self._ahttp.aclose()
