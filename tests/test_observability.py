"""Logging and OpenTelemetry follow every call through the supervisor's observer hook."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tally_client import AsyncClient, Client, RateLimitError, RetryPolicy
from tally_client import otel as tally_otel
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.testing.llama import LlamaServer

from .test_cli import chat_sse

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
KEY = "sk-test-SECRET-777"


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def _reset_scenario(server: ReplayServer) -> str:
    broken = Reply(body=chat_sse("First ", "words ", "lost"), cut_after=200, cut="reset")
    return server.add(Scenario(broken, Reply(body=chat_sse("Second ", "try."))))


# -- logging -------------------------------------------------------------------------------


def test_debug_lines_follow_each_attempt_event_without_content_or_keys(
    server: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = _reset_scenario(server)
    caplog.set_level(logging.DEBUG, logger="tally_client")
    with Client(base_url=url + "/v1", api_key=KEY, retry=FAST) as client:
        response = client.stream("Tell me a secret story.").final()
    assert response.text == "Second try."
    lines = [r.getMessage() for r in caplog.records if r.name == "tally_client"]
    expected = [
        "attempt 1: request sent",
        "headers: HTTP 200, text/event-stream",
        "first token after",
        "attempt 1 failed (StreamInterrupted); retrying in",
        "attempt 2: request sent",
        "reset before attempt 2: 12 characters shown are discarded",
        "finished: complete, finish reason stop, 5 in / 2 out tokens",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    retry = next(r for r in caplog.records if "retrying" in r.getMessage())
    assert retry.levelno == logging.INFO
    text = "\n".join(lines)
    for secret in (KEY, "secret story", "First", "Second", "words"):
        assert secret not in text


def test_a_failed_call_logs_its_error_class_at_info(
    server: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    limited = Reply.error(429, {"error": {"message": "slow down, user said: hi"}})
    url = server.add(Scenario(limited, limited, limited))
    caplog.set_level(logging.INFO, logger="tally_client")
    with Client(base_url=url + "/v1", retry=FAST) as client, pytest.raises(RateLimitError):
        client.complete("hi")
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tally_client"]
    assert sum("retrying in" in m for _, m in messages) == 2
    assert (logging.INFO, "openai-compatible/default: failed after 3 attempt(s): "
            "RateLimitError (HTTP 429)") in messages  # fmt: skip
    assert not any("slow down" in m for _, m in messages)  # provider messages stay out
    assert all(level >= logging.INFO for level, _ in messages)  # DEBUG was not enabled


def test_logging_is_silent_unless_configured(server: ReplayServer) -> None:
    url = _reset_scenario(server)
    code = (
        "from tally_client import Client, RetryPolicy\n"
        f"with Client(base_url={url + '/v1'!r}, retry=RetryPolicy(initial_delay=0.01)) as c:\n"
        "    print(c.stream('x').final().text)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Second try.\n"
    assert out.stderr == ""


# -- OpenTelemetry ---------------------------------------------------------------------------


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.observer = tally_otel.OTelObserver(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith("chat ")]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def test_a_streamed_call_gets_a_genai_span_events_and_metrics(
    server: ReplayServer, telemetry: Telemetry
) -> None:
    url = _reset_scenario(server)
    with Client(base_url=url + "/v1", retry=FAST, observers=[telemetry.observer]) as client:
        client.stream("Tell me a story.", max_tokens=50, temperature=0.5).final()
    (span,) = telemetry.finished()
    assert span.name == "chat default"
    assert span.kind is SpanKind.CLIENT
    attrs = attributes(span)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai-compatible"  # not "openai": a local server
    assert attrs["gen_ai.request.model"] == "default"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (5, 2)
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["tally.response.state"] == "complete"
    assert attrs["tally.attempts"] == 2
    assert "gen_ai.input.messages" not in attrs  # content is opt-in
    assert "gen_ai.output.messages" not in attrs
    assert span.status.status_code is StatusCode.UNSET
    retry, reset = span.events
    assert retry.name == "tally.retry"
    assert dict(retry.attributes or {})["error.type"] == "StreamInterrupted"
    assert reset.name == "tally.reset"
    assert dict(reset.attributes or {})["tally.reset.discarded_chars"] == len("First words ")

    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert duration.attributes["gen_ai.provider.name"] == "openai-compatible"
    assert len(telemetry.points("gen_ai.client.operation.time_to_first_chunk")) == 1
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in
              telemetry.points("gen_ai.client.token.usage")}  # fmt: skip
    assert tokens == {"input": 5, "output": 2}


def test_a_failed_call_ends_its_span_with_an_error(
    server: ReplayServer, telemetry: Telemetry
) -> None:
    limited = Reply.error(429, {"error": {"message": "slow down"}})
    url = server.add(Scenario(limited, limited))
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01)
    with (
        Client(base_url=url + "/v1", retry=retry, observers=[telemetry.observer]) as client,
        pytest.raises(RateLimitError),
    ):
        client.complete("hi")
    (span,) = telemetry.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "RateLimitError"
    assert [e.name for e in span.events] == ["tally.retry"]
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "RateLimitError"


def test_spans_end_when_a_stream_is_broken_out_of_or_abandoned(
    server: ReplayServer, telemetry: Telemetry
) -> None:
    paced = Reply(body=chat_sse(*(f"w{i} " for i in range(50))), chunk_delay=0.02)
    url = server.add(Scenario(paced, paced))
    with Client(base_url=url + "/v1", observers=[telemetry.observer]) as client:
        with client.stream("x") as stream:
            for _ in stream.text():
                break
        assert len(telemetry.finished()) == 1

        abandoned = client.stream("x")
        next(iter(abandoned))
        del abandoned
        gc.collect()
        spans = telemetry.finished()
    assert len(spans) == 2
    for span in spans:
        assert attributes(span)["tally.response.state"] == "cancelled"
        assert span.end_time is not None


def test_async_calls_are_children_of_the_callers_span_in_each_task(
    server: ReplayServer, telemetry: Telemetry
) -> None:
    url = server.add(Scenario(*[Reply(body=chat_sse("a", "b"), chunk_delay=0.01)] * 4))
    tracer = telemetry.tracer_provider.get_tracer("test")

    async def one(client: AsyncClient, name: str) -> int:
        with tracer.start_as_current_span(name) as parent:
            async with client.stream("x") as stream:
                await stream.final()
            return parent.get_span_context().span_id

    async def main() -> list[int]:
        async with AsyncClient(base_url=url + "/v1", observers=[telemetry.observer]) as client:
            return list(await asyncio.gather(one(client, "p1"), one(client, "p2")))

    parents = asyncio.run(main())
    spans = telemetry.finished()
    assert len(spans) == 2
    assert sorted(s.parent.span_id for s in spans if s.parent) == sorted(parents)
    # cancelling the task that iterates a stream ends its span too

    async def cancelled() -> None:
        async with AsyncClient(base_url=url + "/v1", observers=[telemetry.observer]) as client:
            stream = client.stream("x")

            async def read() -> None:
                async for _ in stream:
                    await asyncio.sleep(10)

            task = asyncio.create_task(read())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(cancelled())
    states = [attributes(s)["tally.response.state"] for s in telemetry.finished()]
    assert states == ["complete", "complete", "cancelled"]


def test_content_only_with_the_conventions_opt_in(
    server: ReplayServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add(Scenario(*[Reply(body=chat_sse("Paris"))] * 2))
    with Client(base_url=url + "/v1", observers=[telemetry.observer]) as client:
        client.stream("Capital of France?", system="Be brief.").final()
        monkeypatch.setenv(tally_otel.CAPTURE_CONTENT_ENV, "SPAN_ONLY")
        client.stream("Capital of France?", system="Be brief.").final()
    without, with_content = (attributes(s) for s in telemetry.finished())
    assert not any("Capital" in str(v) or "Paris" in str(v) for v in without.values())
    assert json.loads(with_content["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}
    ]
    assert json.loads(with_content["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]
    (output,) = json.loads(with_content["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": "Paris"}]
    assert output["finish_reason"] == "stop"


def test_instrument_observes_every_client_until_uninstrumented(
    server: ReplayServer, telemetry: Telemetry
) -> None:
    url = server.add(Scenario(*[Reply(body=chat_sse("ok"))] * 2))
    tally_otel.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        with Client(base_url=url + "/v1") as client:
            client.stream("x").final()
    finally:
        tally_otel.uninstrument()
    with Client(base_url=url + "/v1") as client:
        client.stream("x").final()
    assert len(telemetry.finished()) == 1


@pytest.mark.live
def test_live_call_span_has_reported_usage(llama: LlamaServer, telemetry: Telemetry) -> None:
    with Client(base_url=llama.base_url, observers=[telemetry.observer]) as client:
        response = client.stream("Say hi.", max_tokens=16).final()
    (span,) = telemetry.finished()
    attrs = attributes(span)
    assert attrs["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert 0 < attrs["gen_ai.usage.output_tokens"] <= 16
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(
        response.metrics.ttft, abs=0.05
    )
