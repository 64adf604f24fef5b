"""Step 6: telemetry to the hosted router: one outcome per call, sent in the background.

After every call routed by `TallyRouter`, `POST {TALLY_BASE_URL}/telemetry` with the envelope,
the model used and the one recommended, the outcome, input and output tokens, latency, stream
mode and decision id: never content. Fields in the site's format ("v2", tallyy.org/docs.html:
`semantic_envelope`, `model_used`, `recommended_model`, `outcome`, `ntok_input`,
`ntok_output`; latency, stream mode and decision id are tally_client's names for what the
site leaves unnamed) or the live client's ("v1": `protocol_version` "1.0", `id`,
`tokens_input`, `tokens_output`, `duration_ms`, `success`, `retry_count`, `outcome_signal`).

Sending never blocks a call: outcomes wait in a bounded queue that drops when full, a daemon
thread posts them with a short timeout, and `close()` flushes what is queued (a few seconds
at most).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .._decision import Decision, Outcome
from .._envelope import Envelope
from ._worker import Worker
from .remote import WireFormat, envelope_wire

if TYPE_CHECKING:
    import httpx

__all__ = ["Telemetry", "telemetry_body"]

log = logging.getLogger("tally_client.routing")


def telemetry_body(
    decision: Decision, outcome: Outcome, envelope: Envelope, wire: WireFormat
) -> dict[str, Any]:
    """The JSON body of `POST /telemetry` for one outcome."""
    ok = outcome.success >= 0.5
    latency_ms = None if outcome.latency is None else round(outcome.latency * 1000)
    if wire == "v1":
        return {
            "protocol_version": "1.0",
            "id": decision.id,
            "semantic_envelope": envelope_wire(envelope, "v1"),
            "available_tools": [],
            "model_used": outcome.model,
            "tokens_input": outcome.input_tokens,
            "tokens_output": outcome.output_tokens,
            "duration_ms": latency_ms,
            "success": ok,
            "retry_count": max(0, outcome.attempts - 1),
            "outcome_signal": "compliant" if ok else "failed",
        }
    return {
        "semantic_envelope": envelope_wire(envelope, "v2"),
        "model_used": outcome.model,
        "recommended_model": decision.model,
        "outcome": "success" if ok else "failure",
        "score": outcome.success,
        "state": outcome.state,
        "finish_reason": outcome.finish_reason,
        "ntok_input": outcome.input_tokens,
        "ntok_output": outcome.output_tokens,
        "latency_ms": latency_ms,
        "stream": outcome.stream,
        "decision_id": decision.id,
        "decision_source": decision.source,
        "exploration_flag": decision.exploration,
    }


class Telemetry:
    """A bounded background sender for `/telemetry`.

    Args:
        base_url: the hosted router's base URL.
        api_key: the bearer key.
        wire: "v2" or "v1" (see `telemetry_body`).
        maxsize: outcomes waiting at most; more are dropped (counted in `dropped`).
        timeout: seconds per POST.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        wire: WireFormat,
        *,
        maxsize: int = 1000,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/telemetry"
        self.wire: WireFormat = wire
        self.timeout = timeout
        self._key = api_key
        self._transport = transport
        self._http: httpx.Client | None = None
        self._worker: Worker[bytes] = Worker(self._post, maxsize=maxsize, name="tally-telemetry")
        self.sent = 0
        self.failed = 0

    @property
    def dropped(self) -> int:
        """Outcomes dropped because the queue was full."""
        return self._worker.dropped

    def send(self, decision: Decision, outcome: Outcome, envelope: Envelope) -> bool:
        """Queue one outcome; False when the queue is full (it is dropped). Never blocks."""
        body = json.dumps(telemetry_body(decision, outcome, envelope, self.wire)).encode()
        return self._worker.submit(body)

    def _post(self, batch: list[bytes]) -> None:
        import httpx

        if self._http is None:
            self._http = httpx.Client(transport=self._transport, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        for body in batch:
            try:
                reply = self._http.post(self.url, content=body, headers=headers)
                ok = 200 <= reply.status_code < 300
            except httpx.HTTPError as exc:
                ok = False
                log.debug("telemetry not sent: %s", type(exc).__name__)
            if ok:
                self.sent += 1
            else:
                self.failed += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to `timeout` seconds for queued outcomes to be sent."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to `timeout` seconds), then stop; later outcomes are dropped."""
        self._worker.close(timeout)
        if self._http is not None:
            self._http.close()
