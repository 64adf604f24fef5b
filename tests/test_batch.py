"""Batch APIs: OpenAI's against a real Llama Stack running lines on llama-server; Anthropic's
and Gemini's by replay of their documented shapes; both twins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally_client import (
    AsyncClient,
    BadRequestError,
    BatchItemError,
    Client,
    ConfigurationError,
    RateLimitError,
    RetryPolicy,
)
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.testing.llama import LlamaServer
from tally_client.testing.llamastack import LlamaStackError, LlamaStackServer

RECORDINGS = Path(__file__).parent / "recordings"
FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)


def recording(path: str) -> Any:
    return json.loads((RECORDINGS / path).read_text())


def jsonl(*lines: Any) -> Reply:
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return Reply(body=body, content_type="application/binary", framing="content-length")


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as s:
        yield s


# -- OpenAI Batch on a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def llama_stack(llama: LlamaServer) -> Iterator[LlamaStackServer]:
    """Llama Stack with files + batches, its inference on the session's llama-server.

    Never skipped: if it cannot be provisioned or started, the tests fail with the reason.
    """
    try:
        stack = LlamaStackServer.start(llama.base_url)
    except LlamaStackError as exc:
        pytest.fail(f"the OpenAI Batch tests need Llama Stack and it could not start: {exc}")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.live
def test_openai_batch_runs_every_line_on_the_model_and_decodes_responses(
    llama_stack: LlamaStackServer,
) -> None:
    prompts = [f"Say the number {i}." for i in range(6)]
    with Client(base_url=llama_stack.base_url, model=llama_stack.model) as client:
        job = client.batch(prompts, max_tokens=8)
        assert job.id.startswith("batch_")
        assert job.status in ("validating", "in_progress", "finalizing", "completed")
        items = list(job.wait(poll_interval=0.2, timeout=120))
    assert job.status == "completed"
    assert [item.index for item in items] == list(range(6))
    assert [item.custom_id for item in items] == [f"item-{i}" for i in range(6)]
    for item in items:
        assert item.error is None
        response = item.response
        assert response is not None
        assert response.text.strip()  # real generation, not canned text
        assert response.usage.output_tokens is not None
        assert 0 < response.usage.output_tokens <= 8
        assert response.finish_reason in ("stop", "length")
        assert response.state == "complete"
    assert len({item.response.text for item in items if item.response}) > 1


@pytest.mark.live
def test_openai_batch_structured_output_and_resume_by_id(llama_stack: LlamaStackServer) -> None:
    # The server constrains generation to the schema (llama.cpp's JSON-schema grammar), so a
    # bounded string and greedy decoding bound the output: the 135M model, sampling, once ran
    # an unbounded name past the token limit.
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 24}},
        "required": ["name"],
    }
    with Client(base_url=llama_stack.base_url, model=llama_stack.model) as client:
        job = client.batch(
            ["Give a person's name as JSON."] * 2, max_tokens=120, temperature=0, schema=schema
        )
    # Another process knows only the id: a new client resumes the job from it.
    with Client(base_url=llama_stack.base_url, model=llama_stack.model) as other:
        resumed = other.batch_job(job.id, schema=schema)
        assert resumed.id == job.id
        items = list(resumed.wait(poll_interval=0.2, timeout=120))
    assert len(items) == 2
    for item in items:
        assert item.response is not None, item.error
        assert isinstance(item.response.parsed, dict)
        assert isinstance(item.response.parsed["name"], str)
        assert len(item.response.parsed["name"]) <= 24  # the schema reached the server


@pytest.mark.live
def test_openai_batch_cancel(llama_stack: LlamaStackServer) -> None:
    with Client(base_url=llama_stack.base_url, model=llama_stack.model) as client:
        job = client.batch([f"Count to {i}." for i in range(60)], max_tokens=30)
        assert job.cancel() in ("cancelling", "cancelled")
        items = list(job.wait(poll_interval=0.2, timeout=60))
    assert job.status == "cancelled"
    assert len(items) < 60  # the cancelled requests were never run


@pytest.mark.live
@pytest.mark.anyio
async def test_openai_batch_async_twin(llama_stack: LlamaStackServer) -> None:
    async with AsyncClient(base_url=llama_stack.base_url, model=llama_stack.model) as client:
        job = await client.batch(["Say hi.", "Say bye."], max_tokens=6)
        items = [item async for item in job.wait(poll_interval=0.2, timeout=120)]
    assert [item.index for item in items] == [0, 1]
    assert all(item.response is not None and item.response.text for item in items)


# -- OpenAI Batch: documented shapes the local server does not produce ------------------------


def openai_batch(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "batch_abc",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": status,
        "completion_window": "24h",
        "request_counts": {"total": 3, "completed": 1, "failed": 2},
        **extra,
    }


def test_openai_batch_keeps_per_item_errors_and_expired_lines(server: ReplayServer) -> None:
    body = recording("openai_chat/text.json")
    output = jsonl(
        {
            "id": "r0",
            "custom_id": "item-0",
            "response": {"status_code": 200, "request_id": "q0", "body": body},
            "error": None,
        }
    )
    errors = jsonl(
        {
            "id": "r2",
            "custom_id": "item-2",
            "response": None,
            "error": {"code": "batch_expired", "message": "not run within 24h"},
        },
        {
            "id": "r1",
            "custom_id": "item-1",
            "response": {
                "status_code": 400,
                "request_id": "q1",
                "body": {"error": {"message": "bad max_tokens", "type": "invalid_request_error"}},
            },
            "error": None,
        },
    )
    url = server.add(
        Scenario(
            Reply.json({"id": "file-in", "object": "file", "purpose": "batch"}),
            Reply.error(429, {"error": {"message": "slow"}}, {"retry-after-ms": "1"}),
            Reply.json(openai_batch("validating")),
            Reply.json(openai_batch("in_progress")),
            Reply.json(
                openai_batch("expired", output_file_id="file-out", error_file_id="file-err")
            ),
            output,
            errors,
        )
    )
    with Client(base_url=url + "/v1", retry=FAST) as client:
        job = client.batch(["a", "b", "c"], max_tokens=5)
        items = list(job.wait(poll_interval=0.001))
    requests = server.requests(url)
    assert [(r.method, r.path) for r in requests] == [
        ("POST", "/v1/files"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/batches"),  # the 429 was retried
        ("GET", "/v1/batches/batch_abc"),
        ("GET", "/v1/batches/batch_abc"),
        ("GET", "/v1/files/file-out/content"),
        ("GET", "/v1/files/file-err/content"),
    ]
    upload = requests[0].body.decode()
    assert 'name="purpose"' in upload and "batch" in upload
    lines = [json.loads(x) for x in upload.splitlines() if x.startswith('{"custom_id"')]
    assert [line["custom_id"] for line in lines] == ["item-0", "item-1", "item-2"]
    assert all(line["url"] == "/v1/chat/completions" for line in lines)
    assert lines[0]["body"]["max_tokens"] == 5 and "stream" not in lines[0]["body"]
    assert requests[2].json() == {
        "input_file_id": "file-in",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    assert job.status == "expired"
    assert [i.index for i in items] == [0, 1, 2]
    assert items[0].response is not None
    assert items[0].response.text == "Hello! Café au lait — a classic ☕."
    assert items[0].response.usage.input_tokens == 14
    assert isinstance(items[1].error, BadRequestError)
    assert isinstance(items[2].error, BatchItemError)
    assert items[2].error.reason == "expired"


def test_a_batch_that_failed_validation_raises_with_the_lines(server: ReplayServer) -> None:
    failed = openai_batch(
        "failed",
        errors={"data": [{"code": "model_not_found", "line": 1, "message": "no such model"}]},
    )
    url = server.add(Scenario(Reply.json({"id": "f"}), Reply.json(failed)))
    with Client(base_url=url + "/v1") as client:
        job = client.batch(["a"])
        assert job.status == "failed"
        with pytest.raises(Exception, match="line 1: no such model"):
            job.results()


def test_results_before_the_end_and_unknown_providers_are_configuration_errors(
    server: ReplayServer,
) -> None:
    url = server.add(Scenario(Reply.json({"id": "f"}), Reply.json(openai_batch("in_progress"))))
    with Client(base_url=url + "/v1") as client:
        job = client.batch(["a"])
        with pytest.raises(ConfigurationError, match="wait"):
            job.results()
        with pytest.raises(ConfigurationError, match="non-empty list"):
            client.batch([])
        with pytest.raises(ConfigurationError, match="unknown provider"):
            client.batch_job("batch_x", provider="nope")


def test_a_refused_job_raises_the_typed_error(server: ReplayServer) -> None:
    url = server.add(Reply.error(429, {"error": {"message": "quota"}}))
    with Client(base_url=url + "/v1", retry=FAST) as client, pytest.raises(RateLimitError):
        client.batch(["a"])
    assert len(server.requests(url)) == 3  # retried by the policy, then raised


# -- Anthropic Message Batches (replay of the documented shapes) --------------------------------


def anthropic_batch(status: str, results_url: str | None = None) -> dict[str, Any]:
    return {
        "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": 3 if status == "in_progress" else 0,
            "succeeded": 0 if status == "in_progress" else 1,
            "errored": 0 if status == "in_progress" else 1,
            "canceled": 0,
            "expired": 0 if status == "in_progress" else 1,
        },
        "created_at": "2026-11-25T10:00:00Z",
        "expires_at": "2026-11-26T10:00:00Z",
        "ended_at": None if status == "in_progress" else "2026-11-25T10:30:00Z",
        "cancel_initiated_at": None,
        "results_url": results_url,
    }


def test_anthropic_message_batch(server: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    results = server.add(
        jsonl(
            {
                "custom_id": "item-2",
                "result": {"type": "expired"},
            },
            {
                "custom_id": "item-0",
                "result": {"type": "succeeded", "message": recording("anthropic/text.json")},
            },
            {
                "custom_id": "item-1",
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "too long"},
                    },
                },
            },
        )
    )
    url = server.add(
        Scenario(
            Reply.json(anthropic_batch("in_progress")),
            Reply.json(anthropic_batch("ended", results + "/v1/messages/batches/x/results")),
            Reply.json(anthropic_batch("ended", results + "/v1/messages/batches/x/results")),
        )
    )
    with Client(base_url=url, protocol="anthropic", api_key="sk-ant-test", model="claude-x") as c:
        job = c.batch(["a", "b", "c"], max_tokens=20, system="be brief")
        assert job.status == "in_progress"
        items = list(job.wait(poll_interval=0.001, progress=True))
        resumed = c.batch_job(job.id)
    bar = capsys.readouterr().err
    assert "batch completed" in bar and "3/3" in bar
    create = server.requests(url)[0]
    assert (create.method, create.path) == ("POST", "/v1/messages/batches")
    assert create.headers["x-api-key"] == "sk-ant-test"
    assert create.headers["anthropic-version"] == "2023-06-01"
    params = create.json()["requests"]
    assert [p["custom_id"] for p in params] == ["item-0", "item-1", "item-2"]
    assert params[0]["params"]["model"] == "claude-x"
    assert params[0]["params"]["max_tokens"] == 20
    assert params[0]["params"]["system"] == "be brief"
    assert "stream" not in params[0]["params"]
    assert job.status == "completed"
    assert resumed.status == "completed"
    assert [r.path for r in server.requests(results)] == ["/v1/messages/batches/x/results"]
    assert server.requests(results)[0].headers["x-api-key"] == "sk-ant-test"
    assert items[0].response is not None
    assert items[0].response.text == "Hello! Café au lait — a classic ☕."
    assert items[0].response.usage.output_tokens == 14
    assert items[0].response.finish_reason == "stop"
    assert isinstance(items[1].error, BadRequestError)
    assert isinstance(items[2].error, BatchItemError) and items[2].error.reason == "expired"


# -- Gemini batch mode (replay of the documented shapes) ---------------------------------------


def gemini_operation(state: str, inlined: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "name": "batches/123",
        "metadata": {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": "models/gemini-2.5-flash",
            "displayName": "tally_client-2",
            "state": state,
            "batchStats": {"requestCount": "2", "pendingRequestCount": "2"},
        },
    }
    if inlined is not None:
        op["done"] = True
        op["response"] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main."
            "GenerateContentBatchOutput",
            "inlinedResponses": {"inlinedResponses": inlined},
        }
    return op


def test_gemini_batch_mode(server: ReplayServer) -> None:
    inlined = [
        {"response": recording("gemini/text.json"), "metadata": {"key": "item-0"}},
        {
            "error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"},
            "metadata": {"key": "item-1"},
        },
    ]
    url = server.add(
        Scenario(
            Reply.json(gemini_operation("BATCH_STATE_PENDING")),
            Reply.json(gemini_operation("BATCH_STATE_RUNNING")),
            Reply.json(gemini_operation("BATCH_STATE_SUCCEEDED", inlined)),
        )
    )
    with Client(
        base_url=url, protocol="gemini", api_key="g-test", model="gemini-2.5-flash"
    ) as client:
        job = client.batch(["a", "b"], max_tokens=10)
        assert (job.id, job.status) == ("batches/123", "validating")
        items = list(job.wait(poll_interval=0.001))
    requests = server.requests(url)
    assert (requests[0].method, requests[0].path) == (
        "POST",
        "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
    )
    assert requests[0].headers["x-goog-api-key"] == "g-test"
    batch = requests[0].json()["batch"]
    sent = batch["inputConfig"]["requests"]["requests"]
    assert [r["metadata"]["key"] for r in sent] == ["item-0", "item-1"]
    assert sent[0]["request"]["generationConfig"]["maxOutputTokens"] == 10
    assert [(r.method, r.path) for r in requests[1:]] == [("GET", "/v1beta/batches/123")] * 2
    assert job.status == "completed"
    assert items[0].response is not None
    assert items[0].response.text == "Hello! Café au lait — a classic ☕."
    assert items[0].response.usage.input_tokens == 9
    assert isinstance(items[1].error, BadRequestError)


@pytest.mark.anyio
async def test_gemini_cancel_async(server: ReplayServer) -> None:
    url = server.add(
        Scenario(
            Reply.json(gemini_operation("BATCH_STATE_RUNNING")),
            Reply.json({}),
            Reply.json(gemini_operation("BATCH_STATE_CANCELLED", [])),
        )
    )
    async with AsyncClient(
        base_url=url, protocol="gemini", api_key="g-test", model="gemini-2.5-flash"
    ) as client:
        job = await client.batch(["a", "b"])
        assert await job.cancel() == "cancelled"
        assert [item async for item in job.wait()] == []
    assert [(r.method, r.path) for r in server.requests(url)[1:]] == [
        ("POST", "/v1beta/batches/123:cancel"),
        ("GET", "/v1beta/batches/123"),
    ]


# -- the delivery decision: batch ------------------------------------------------------------


def test_route_recommends_batch_only_for_a_pipeline_that_can_wait_on_a_batch_provider() -> None:
    from tally_client import ModelSpec
    from tally_client._routing import EmbeddedRouter
    from tally_client.providers.openai_chat import OpenAIChatProvider

    day = 24 * 3600.0
    models = [ModelSpec("m", "p", batch_discount=0.5)]
    providers = {"p": OpenAIChatProvider(base_url="http://127.0.0.1:9/v1", name="p")}
    with Client(models, providers=providers) as client:
        decision = client.route("label this", consumer="pipeline", latency_tolerance=day)
        assert decision.batch and not decision.stream
        assert "Batch API" in decision.reasons[0] and "50% less" in decision.reasons[0]
        assert not client.route("x", consumer="pipeline", latency_tolerance=3600).batch
        assert not client.route("x", consumer="human", latency_tolerance=day).batch
        assert not client.route("x", consumer="pipeline").batch
        tools = [{"name": "lookup"}]
        assert not client.route("x", consumer="pipeline", latency_tolerance=day, tools=tools).batch
        with pytest.raises(ConfigurationError, match="latency_tolerance"):
            client.route("x", latency_tolerance=-1)
    no_batch = [ModelSpec("m", "p")]
    with Client(no_batch, providers=providers, router=EmbeddedRouter()) as client:
        assert not client.route("x", consumer="pipeline", latency_tolerance=day).batch


def test_a_live_call_that_routes_to_batch_runs_atomically(server: ReplayServer) -> None:
    from tally_client import ModelSpec
    from tally_client.providers.openai_chat import OpenAIChatProvider

    url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
    providers = {"p": OpenAIChatProvider(base_url=url + "/v1", name="p")}
    with Client([ModelSpec("m", "p", batch_discount=0.5)], providers=providers) as client:
        response = client.respond("hi", consumer="pipeline", latency_tolerance=1e6).final()
    assert response.decision is not None
    assert not response.decision.batch and not response.decision.stream
    assert "Batch API" in " ".join(response.decision.reasons)
    assert server.requests(url)[0].json().get("stream") in (None, False)


def test_batch_responses_cost_the_discounted_price(server: ReplayServer) -> None:
    from tally_client import ModelSpec, Price
    from tally_client.providers.anthropic import AnthropicProvider

    message = recording("anthropic/text.json")
    results = server.add(
        jsonl({"custom_id": "item-0", "result": {"type": "succeeded", "message": message}})
    )
    ended = anthropic_batch("ended", results + "/v1/messages/batches/x/results")
    url = server.add(Scenario(Reply.json(ended)))
    price = Price(input=3.0, output=15.0)
    models = [ModelSpec("claude-x", "anthropic", price=price, batch_discount=0.5)]
    providers = {"anthropic": AnthropicProvider(base_url=url, api_key="sk-ant-test")}
    with Client(models, providers=providers) as client:
        job = client.batch(["a"], max_tokens=20)
        [item] = list(job.wait(poll_interval=0.001))
    assert item.response is not None
    usage = item.response.usage
    live = price.cost(usage.input_tokens, usage.output_tokens)
    assert live is not None and item.response.cost == pytest.approx(live / 2)
