"""The fault matrix: every provider x every way a stream fails, over the byte-exact replay server.

For each case it checks the final state, the error type, the retries made and the text kept.
Two invariants hold everywhere: nothing the user received is lost (the text yielded equals the
text on the Response or on the error's `.partial`), and nothing partial is reported complete.
Each fault is also replayed as "fault, then a good reply" to check that a retry recovers the
whole answer, with a Reset exactly when output had been shown.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_client import (
    Client,
    IdleTimeout,
    OverloadedError,
    ProtocolError,
    ProviderError,
    RateLimitError,
    Reset,
    Response,
    RetryPolicy,
    ServerError,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    Timeouts,
)
from tally_client._config import load_provider
from tally_client.testing.replay import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"
NO_RETRY = RetryPolicy(max_attempts=1)
ONE_RETRY = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
TIMEOUTS = Timeouts(connect=2.0, first_token=5.0, idle=0.3, total=10.0)


@dataclass(frozen=True)
class Wire:
    """How a provider is reached on the replay server and how its SSE events are framed."""

    name: str
    protocol: str
    path: str
    newline: bytes
    model: str

    @property
    def available(self) -> bool:
        module = f"tally_client.providers.{self.protocol.replace('-', '_')}"
        return importlib.util.find_spec(module) is not None

    def body(self, scenario: str) -> bytes:
        return (RECORDINGS / self.name / f"{scenario}.sse").read_bytes()

    def events(self, body: bytes) -> list[bytes]:
        """The body's SSE events, each with its terminating blank line."""
        sep = self.newline * 2
        parts = body.split(sep)
        return [p + sep for p in parts[:-1]]


WIRES = [
    Wire("openai_chat", "openai-chat", "/v1", b"\n", "gpt-4o-mini"),
    Wire("openai_responses", "openai-responses", "/v1", b"\n", "gpt-5"),
    Wire("anthropic", "anthropic", "", b"\n", "claude-sonnet-4-5"),
    Wire("gemini", "gemini", "", b"\r\n", "gemini-2.5-flash"),
]
AVAILABLE = [w for w in WIRES if w.available]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def expected_text(wire: Wire, body: bytes) -> str:
    """The text our decoder gives for the whole events in `body` (the oracle tests pin it)."""
    decoder = load_provider(wire.protocol, api_key="test-key").new_decoder()
    text: list[str] = []
    for raw in wire.events(body):
        name, data = "message", []
        for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            try:
                events = decoder.feed(name, "\n".join(data))
            except ProviderError:
                break
            text.extend(e.text for e in events if isinstance(e, TextDelta))
    return "".join(text)


@dataclass
class Outcome:
    shown: str
    resets: int
    response: Response | None
    error: ProviderError | None

    @property
    def final(self) -> Response:
        if self.response is not None:
            return self.response
        assert self.error is not None and self.error.partial is not None
        return self.error.partial


def run(server: ReplayServer, wire: Wire, replies: list[Reply], retry: RetryPolicy) -> Outcome:
    url = server.add(Scenario(*replies))
    shown: list[str] = []
    resets = 0
    provider = load_provider(wire.protocol, base_url=url + wire.path, api_key="test-key")
    client = Client([_spec(wire)], providers={"p": provider}, retry=retry, timeouts=TIMEOUTS)
    with client:
        stream = client.stream("hi")
        try:
            for event in stream:
                if isinstance(event, TextDelta):
                    shown.append(event.text)
                elif isinstance(event, Reset):
                    resets += 1
                    assert "".join(shown).endswith(event.discarded_text)
                    shown.clear()  # a UI clears what the reset discards
        except ProviderError as exc:
            return Outcome("".join(shown), resets, None, exc)
    return Outcome("".join(shown), resets, stream.final(), None)


def _spec(wire: Wire):
    from tally_client import ModelSpec

    return ModelSpec(wire.model, "p")


def check_invariants(out: Outcome) -> None:
    # Nothing the user received is lost: what is on screen is exactly the final text.
    assert out.shown == out.final.text
    # Nothing partial is reported complete.
    if out.error is not None:
        assert out.final.state != "complete"


def check_recovers(server: ReplayServer, wire: Wire, fault: Reply, kept: str) -> Outcome:
    """The fault, then a good reply: the retry delivers the whole answer, after a Reset
    exactly when the failed attempt had shown text."""
    full = wire.body("text")
    recovered = run(server, wire, [fault, Reply(body=full)], ONE_RETRY)
    check_invariants(recovered)
    assert recovered.final.state == "complete"
    assert recovered.final.text == expected_text(wire, full)
    assert recovered.resets == (1 if kept else 0)
    assert len(recovered.final.attempts) == 2
    return recovered


def boundary_cases() -> list[tuple[Wire, int]]:
    cases: list[tuple[Wire, int]] = []
    for wire in AVAILABLE:
        n = len(wire.events(wire.body("text")))
        cases.extend((wire, k) for k in range(1, n))
    return cases


@pytest.mark.parametrize(
    ("wire", "k"), boundary_cases(), ids=lambda v: v.name if isinstance(v, Wire) else f"cut{v}"
)
def test_clean_cut_at_each_event_boundary(server: ReplayServer, wire: Wire, k: int) -> None:
    full = wire.body("text")
    cut = sum(len(e) for e in wire.events(full)[:k])
    reply = Reply(body=full, cut_after=cut)
    out = run(server, wire, [reply], NO_RETRY)
    check_invariants(out)
    kept = expected_text(wire, full[:cut])
    assert out.final.text == kept
    assert out.final.state == "partial", "a stream without its terminal event is never complete"
    assert out.error is None  # a clean early end is returned, not raised
    check_recovers(server, wire, reply, kept)


FAULTS = ["inside_event", "inside_utf8", "reset", "stall", "malformed", "error_event"]
STATUSES = [
    ("429", Reply.error(429, {"error": {"message": "slow down", "type": "rate_limit_error"}},
                        {"retry-after-ms": "20"}), RateLimitError),
    ("500", Reply.error(500, {"error": {"message": "boom", "type": "api_error"}}), ServerError),
    ("503", Reply.error(503, {"error": {"message": "busy", "status": "UNAVAILABLE"}}),
     OverloadedError),
    ("529", Reply.error(529, {"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "Overloaded"}}),
     OverloadedError),
    ("html502", Reply.html_error(502), ServerError),
]  # fmt: skip


def faulty(wire: Wire, fault: str) -> tuple[Reply, type[ProviderError] | None, bytes]:
    """The faulty reply, the error it must raise (None: a partial Response), and the bytes
    whose whole events the user must have received."""
    full = wire.body("text")
    events = wire.events(full)
    mid = len(events) // 2
    at_mid = sum(len(e) for e in events[:mid])
    if fault == "inside_event":
        cut = at_mid + len(events[mid]) // 2
        return Reply(body=full, cut_after=cut), None, full[:at_mid]
    if fault == "inside_utf8":
        cut = next(i for i in range(len(full)) if full[i] >= 0xC0) + 1  # after a lead byte
        start = max(p for p in _boundaries(events) if p <= cut)
        return Reply(body=full, cut_after=cut), None, full[:start]
    if fault == "reset":
        return Reply(body=full, cut_after=at_mid, cut="reset"), StreamInterrupted, full[:at_mid]
    if fault == "stall":
        return Reply(body=full, stall_after=at_mid), IdleTimeout, full[:at_mid]
    if fault == "malformed":
        bad = b"data: {not json" + wire.newline * 2
        return Reply(body=full[:at_mid] + bad + full[at_mid:]), ProtocolError, full[:at_mid]
    assert fault == "error_event"
    body = wire.body("error_event")
    start = _boundaries(wire.events(body))[-2]  # the error is each recording's last event
    return Reply(body=body), ProviderError, body[:start]


def _boundaries(events: list[bytes]) -> list[int]:
    out, pos = [0], 0
    for e in events:
        pos += len(e)
        out.append(pos)
    return out


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("wire", AVAILABLE, ids=lambda w: w.name)
def test_mid_stream_faults(server: ReplayServer, wire: Wire, fault: str) -> None:
    reply, error_type, received = faulty(wire, fault)
    out = run(server, wire, [reply], NO_RETRY)
    check_invariants(out)
    kept = expected_text(wire, received)
    assert out.final.text == kept
    if error_type is None:
        assert out.error is None
        assert out.final.state == "partial"
    else:
        assert isinstance(out.error, error_type), out.error
        assert out.final.state == "interrupted"
        assert len(out.error.attempts) == 1
    if fault == "error_event":
        assert out.error is not None and out.error.retryable  # overloaded / server errors
    recovered = check_recovers(server, wire, reply, kept)
    assert recovered.final.attempts[0].text_chars == len(kept)


@pytest.mark.parametrize(("label", "reply", "error_type"), STATUSES, ids=[s[0] for s in STATUSES])
@pytest.mark.parametrize("wire", AVAILABLE, ids=lambda w: w.name)
def test_status_faults(
    server: ReplayServer, wire: Wire, label: str, reply: Reply, error_type: type
) -> None:
    out = run(server, wire, [reply], NO_RETRY)
    assert type(out.error) is error_type
    assert out.final.text == ""
    assert out.shown == ""
    full = wire.body("text")
    recovered = run(server, wire, [reply, Reply(body=full)], ONE_RETRY)
    assert recovered.final.state == "complete"
    assert recovered.final.text == expected_text(wire, full)
    assert recovered.resets == 0  # nothing had been shown
    first = recovered.final.attempts[0]
    assert type(first.error) is error_type
    if label == "429":
        assert first.wait == pytest.approx(0.02)


SCENARIOS = ["text", "tool_call"]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("wire", AVAILABLE, ids=lambda w: w.name)
def test_random_byte_splits_give_the_same_events(
    server: ReplayServer, wire: Wire, scenario: str
) -> None:
    body = wire.body(scenario)

    def events(reply: Reply) -> list[StreamEvent]:
        provider = load_provider(wire.protocol, base_url=server.add(reply) + wire.path,
                                 api_key="test-key")  # fmt: skip
        with Client([_spec(wire)], providers={"p": provider}, retry=NO_RETRY) as client:
            with client.stream("hi") as stream:
                out = list(stream)
            assert stream.final().state == "complete"
        return out

    reference = events(Reply(body=body))

    @settings(max_examples=25, deadline=None)
    @given(sizes=st.lists(st.integers(min_value=1, max_value=61), min_size=1, max_size=6))
    def check(sizes: list[int]) -> None:
        assert events(Reply(body=body, split=sizes)) == reference

    check()
