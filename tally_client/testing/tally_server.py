"""A loopback stand-in for the hosted Tally router, with a real learner behind it.

`TallyServer` answers `POST /route` and `POST /telemetry` on 127.0.0.1 the way
`tally_client.routing.remote` expects the hosted router to (tally-router-api.md): bearer key
checked, `recommended_model` chosen by a `Learner` among the `available_models`, per shape of
the `semantic_envelope` (either wire version), learning from the telemetry it receives. It
keeps every request's raw bytes (`requests`) so tests can prove no content was sent, and it
injects faults on demand (`fault`): "timeout" (answer after `delay` s), "500", "malformed",
"unknown-model", "not-object", "hang-telemetry" (telemetry answered after `delay` s), and
"trickle-headers" / "trickle-body" (a valid route answer, padded to `TRICKLE_BYTES` bytes and
written one byte every `trickle_interval` s from the status line or from the body on; the
`trickle_abandoned` event is set when the client hangs up before the last byte, and
`trickle_done` when it got every byte).

    with TallyServer(api_key="tly_test") as server:
        client = Client(router=TallyRouter("tly_test", server.url))
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..routing.catalog import price_for
from ..routing.learner import Learner

__all__ = ["TRICKLE_BYTES", "TallyRequest", "TallyServer"]

TRICKLE_BYTES = 400
"""The size of a trickled answer: at the default interval, 20 s to send in full."""


@dataclass(frozen=True)
class TallyRequest:
    """One request the stand-in received: path, headers (lower-cased) and raw body bytes."""

    path: str
    headers: dict[str, str]
    body: bytes


def _shape(envelope: Any) -> str:
    if not isinstance(envelope, dict):
        return "-"
    keys = sorted(k for k in envelope if k not in ("protocol_version", "schema_version"))
    return "|".join(f"{k}={envelope[k]}" for k in keys)


class TallyServer:
    """The hosted router's stand-in on a free loopback port (see the module doc).

    Args:
        api_key: the bearer key it accepts (others get 401).
        seed: the learner's seed.
        cost_weight: the learner's cost-quality trade-off.
    """

    def __init__(
        self, api_key: str = "tly_test", *, seed: int = 0, cost_weight: float = 0.1
    ) -> None:
        self.api_key = api_key
        self.learner = Learner(":memory:", seed=seed, cost_weight=cost_weight)
        self.requests: list[TallyRequest] = []
        self.fault: str | None = None
        self.delay = 3.0
        self.advise_stream: bool | None = None
        self.trickle_interval = 0.05
        self.trickle_abandoned = threading.Event()
        self.trickle_done = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.learned = 0
        """Outcomes the learner has learned from telemetry."""

    @property
    def url(self) -> str:
        """The base URL (http://127.0.0.1:PORT), for TALLY_BASE_URL."""
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def bodies(self, path: str) -> list[bytes]:
        """The raw bodies received on `path` ("/route" or "/telemetry")."""
        with self._lock:
            return [r.body for r in self.requests if r.path == path]

    def start(self) -> TallyServer:
        """Listen on a free loopback port, serving from a daemon thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                request = TallyRequest(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                status, reply = owner.handle(request)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                fault = owner.fault or ""
                if fault.startswith("trickle-") and request.path == "/route" and status == 200:
                    owner.trickle(self.wfile, data, fault == "trickle-headers")
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TallyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle(self, request: TallyRequest) -> tuple[int, Any]:
        """Record `request` and answer it: (HTTP status, a JSON value or raw bytes)."""
        with self._lock:
            self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": "invalid API key"}
        try:
            data = json.loads(request.body)
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if request.path == "/telemetry":
            if self.fault == "hang-telemetry":
                time.sleep(self.delay)
            return self._telemetry(data)
        if request.path != "/route":
            return 404, {"error": "not found"}
        fault = self.fault
        if fault == "timeout":
            time.sleep(self.delay)
        elif fault == "500":
            return 500, {"error": "internal error"}
        elif fault == "malformed":
            return 200, b'{"recommended_model": '
        elif fault == "not-object":
            return 200, [1, 2, 3]
        models = [m for m in data.get("available_models", []) if isinstance(m, str)]
        if not models:
            return 400, {"error": "available_models is empty"}
        shape = _shape(data.get("semantic_envelope"))
        with self._lock:
            self._counter += 1
            decision_id = f"tly-{self._counter:08d}"
            if len(models) == 1:
                index, confidence, explored = 0, 1.0, False
            else:
                costs = [(p.blended(1000, 500) if (p := price_for(m)) else 0.0) for m in models]
                pick = self.learner.choose(shape, models, [0.7] * len(models), costs)
                index, confidence, explored = pick.index, pick.confidence, pick.exploration
        answer: dict[str, Any] = {
            "recommended_model": "no-such-model" if fault == "unknown-model" else models[index],
            "exploration_flag": explored,
            "confidence_score": confidence,
            "decision_trace": f"shape seen {self._seen(shape)} time(s)",
            "decision_id": decision_id,
        }
        if self.advise_stream is not None:
            answer["stream_recommended"] = self.advise_stream
        return 200, answer

    def trickle(self, out: Any, data: bytes, from_headers: bool) -> None:
        """Write a 200 answer of `TRICKLE_BYTES` bytes, one byte at a time (bounded: it ends
        when every byte is out or the client hung up)."""
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        body = data.ljust(max(len(data), TRICKLE_BYTES - 100))  # JSON allows the spaces
        pad = b"x-pad: " + b"p" * max(0, TRICKLE_BYTES - len(head) - len(body) - 60) + b"\r\n"
        head += pad + b"content-length: %d\r\n\r\n" % len(body)
        start = 0 if from_headers else len(head)
        try:
            out.write(head[:start])
            out.flush()
            for byte in (head + body)[start:]:
                time.sleep(self.trickle_interval)
                out.write(bytes((byte,)))
                out.flush()
        except OSError:  # the client gave up before the answer was whole
            self.trickle_abandoned.set()
            return
        self.trickle_done.set()

    def _seen(self, shape: str) -> int:
        return int(sum(n for n, _ in self.learner.observations(shape).values()))

    def _telemetry(self, data: dict[str, Any]) -> tuple[int, Any]:
        model = data.get("model_used")
        if not isinstance(model, str):
            return 400, {"error": "model_used is missing"}
        if "score" in data and isinstance(data["score"], (int, float)):
            success = float(data["score"])
        elif "success" in data:
            success = 1.0 if data["success"] else 0.0
        else:
            success = 1.0 if data.get("outcome") == "success" else 0.0
        ident = str(data.get("decision_id") or data.get("id") or "")
        with self._lock:
            self.learner.record(_shape(data.get("semantic_envelope")), model, success, ident)
            self.learned += 1
        return 202, {"accepted": True}
