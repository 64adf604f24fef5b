"""The embedded router reproduces the streaming table of DESIGN.md and explains itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tally_client import (
    Client,
    Confidence,
    ConfigurationError,
    Decision,
    EmbeddedRouter,
    ModelSpec,
    build_envelope,
)
from tally_client._config import load_provider
from tally_client._decision import NO_CHOICE, CallerChoice, Price
from tally_client.routing import ContextLengthError, choose_model
from tally_client.testing.replay import ReplayServer, Reply

LOCAL = [ModelSpec("local", "local", quality=1, context_window=4096, cost=0.0)]
TOOL = [{"name": "get_weather", "parameters": {"type": "object"}}]
TOOL_RESULT: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": []},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
]

# (row, envelope arguments, expected stream, minimum confidence)
TABLE = [
    ("conversational chat UI", dict(task_type="chat", consumer="human"), True, 0.85),
    (
        "long article",
        dict(task_type="creative-writing", consumer="human", expected_output_tokens=2500),
        True,
        0.9,
    ),
    (
        "large code file",
        dict(
            task_type="code-generation",
            structure_type="code",
            consumer="human",
            expected_output_tokens=4000,
        ),
        True,
        0.9,
    ),
    (
        "extract structured data",
        dict(task_type="extraction", schema={"type": "object"}, consumer="machine"),
        False,
        0.9,
    ),
    (
        "function / tool call",
        dict(tools=TOOL, structure_type="json", consumer="machine"),
        False,
        0.85,
    ),
    (
        "classify or label input",
        dict(task_type="classification", consumer="machine", expected_output_tokens=5),
        False,
        0.9,
    ),
]


@pytest.mark.parametrize(("row", "kwargs", "stream", "floor"), TABLE, ids=[r[0] for r in TABLE])
def test_table_rows(row: str, kwargs: dict, stream: bool, floor: float) -> None:
    decision = EmbeddedRouter().route(build_envelope(**kwargs), LOCAL)
    assert decision.stream is stream, decision.reasons
    assert decision.confidence.stream >= floor, (row, decision.confidence)
    assert decision.reasons and all(isinstance(r, str) and r for r in decision.reasons)


def test_short_email_summary_is_either_with_low_confidence() -> None:
    # Row 7: short prose, consumer unknown: the signals conflict, so either mode is fine and
    # the router must say it is unsure.
    envelope = build_envelope(task_type="summarisation", expected_output_tokens=120)
    decision = EmbeddedRouter().route(envelope, LOCAL)
    assert decision.confidence.stream <= 0.6
    assert any("conflict" in r for r in decision.reasons)


def test_mcp_tool_invocation_then_streamed_synthesis() -> None:
    # Row 8: with tools and a human reader, the tool phase is atomic and the synthesis streams.
    router = EmbeddedRouter()
    tool_phase = router.route(
        build_envelope(tools=TOOL, structure_type="mixed", consumer="human"), LOCAL
    )
    assert tool_phase.stream is False
    assert [(p.phase, p.stream) for p in tool_phase.phases] == [
        ("tool", False),
        ("synthesis", True),
    ]
    # The call that carries the tool results is the synthesis: it streams.
    synthesis = router.route(
        build_envelope(TOOL_RESULT, tools=TOOL, structure_type="mixed", consumer="human"), LOCAL
    )
    assert synthesis.stream is True
    assert synthesis.phases == ()


def test_conflicting_signals_lower_the_confidence() -> None:
    router = EmbeddedRouter()
    agreed = router.route(build_envelope(schema={"type": "object"}, consumer="machine"), LOCAL)
    conflicted = router.route(build_envelope(schema={"type": "object"}, consumer="human"), LOCAL)
    assert agreed.stream is False and conflicted.stream is False
    assert conflicted.confidence.stream < agreed.confidence.stream - 0.2
    human_long = router.route(build_envelope(consumer="human", expected_output_tokens=900), LOCAL)
    human_short = router.route(build_envelope(consumer="human", expected_output_tokens=20), LOCAL)
    assert human_short.confidence.stream < human_long.confidence.stream


def test_model_choice_cheapest_good_enough_and_fastest_when_time_sensitive() -> None:
    models = [
        ModelSpec("nano", "p", quality=1, cost=0.1, latency=0.5),
        ModelSpec("mini", "p", quality=2, cost=0.4, latency=0.9),
        ModelSpec("big", "p", quality=3, cost=2.0, latency=0.8),
    ]
    classify = build_envelope(consumer="machine", expected_output_tokens=5)
    assert choose_model(classify, models)[0].name == "nano"
    extract = build_envelope(schema={"type": "object"}, consumer="machine")
    assert choose_model(extract, models)[0].name == "mini"
    code = build_envelope(structure_type="code", consumer="human")
    assert choose_model(code, models)[0].name == "big"
    fast = build_envelope(schema={"type": "object"}, time_sensitive=True)
    assert choose_model(fast, models)[0].name == "big"  # quality >= 2 and the lowest latency


def test_model_choice_respects_the_context_window() -> None:
    models = [
        ModelSpec("small-window", "p", quality=3, context_window=4_096, cost=0.1),
        ModelSpec("big-window", "p", quality=3, context_window=200_000, cost=1.0),
    ]
    long_input = build_envelope(context_tokens=50_000)
    assert long_input.context_length == "extended"
    assert choose_model(long_input, models)[0].name == "big-window"


def test_no_models_is_a_configuration_error_naming_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        EmbeddedRouter().route(build_envelope(), [])


# -- caller choices are router inputs; context length; latency -------------------------------

RECORDINGS = Path(__file__).parent / "recordings"
PAIR = [
    ModelSpec("cheap", "p", quality=1, price=Price(0.1, 0.4), context_window=8_000),
    ModelSpec("dear", "p", quality=3, price=Price(2.0, 8.0), context_window=200_000),
]


def test_caller_model_and_mode_are_inputs_and_the_decision_stays_coherent() -> None:
    router = EmbeddedRouter(learning=False)
    env = build_envelope(task_type="extraction", schema={"type": "object"}, consumer="machine")
    d = router.route(env, PAIR, CallerChoice(model="cheap", stream=True))
    assert (d.model, d.stream, d.source) == ("cheap", True, "caller")
    assert d.confidence == Confidence(1.0, 1.0)
    assert d.reasons[0] == "the caller chose stream(); the rules alone would have said atomic"
    assert d.reasons[-1] == "cheap: chosen by the caller"
    assert d.price == PAIR[0].price
    agreed = router.route(env, PAIR, CallerChoice(stream=False))
    assert agreed.source == "caller" and agreed.model == "dear"  # JSON wants quality 2
    assert agreed.reasons[0] == "the caller chose complete(), as the rules would have"
    free = router.route(env, PAIR)
    assert free.source == "embedded" and not any("caller" in r for r in free.reasons)


def test_the_client_passes_caller_choices_to_any_router() -> None:
    seen: list[CallerChoice] = []

    class Spy:
        def route(self, envelope, models, choice=NO_CHOICE) -> Decision:
            seen.append(choice)
            return EmbeddedRouter(learning=False).route(envelope, models, choice)

    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client(PAIR, providers={"p": codec}, router=Spy()) as client:
            r = client.complete("hi", model="unlisted-model")
            assert client.route(consumer="human").source == "embedded"
    assert seen[0] == CallerChoice("unlisted-model", False)
    assert r.decision is not None and r.decision.source == "caller"
    assert r.decision.model == "unlisted-model"


def test_context_length_error_names_both_numbers_before_any_request_leaves() -> None:
    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client(PAIR, providers={"p": codec}) as client:
            long_prompt = "word " * 200_000  # ~250k tokens by the 4-characters estimate
            with pytest.raises(ContextLengthError) as info:
                client.complete(long_prompt, max_tokens=1000)
            assert info.value.input_tokens >= 240_000 and info.value.output_tokens == 1000
            assert str(info.value.input_tokens) in str(info.value)
            assert "200000" in str(info.value)
            # Fits the big window only: routed there, not to the small one.
            mid = client.route("word " * 20_000, max_tokens=1000)
            assert mid.model == "dear"
        # Only the count endpoint was asked (this stand-in cannot count: the estimate stands);
        # no generation request left.
        assert {r.path for r in server.requests()} <= {"/tokenize"}


def test_a_reader_waiting_on_a_slow_long_answer_tips_to_streaming() -> None:
    slow = ModelSpec("slow", "p", ttft=2.0, output_tokens_per_second=20.0)
    fast = ModelSpec("fast", "p", ttft=0.2, output_tokens_per_second=400.0)
    env = build_envelope(task_type="summarisation", consumer="human", expected_output_tokens=300)
    router = EmbeddedRouter(learning=False)
    slow_d, fast_d = router.route(env, [slow]), router.route(env, [fast])
    assert slow_d.stream and slow_d.confidence.stream > fast_d.confidence.stream
    assert any("~17 s for the whole answer" in r for r in slow_d.reasons)
    assert not any("whole answer" in r for r in fast_d.reasons)


def test_time_sensitive_weighs_e2e_latency_and_says_so() -> None:
    models = [
        ModelSpec("cheap-slow", "p", price=Price(0.1, 0.4), ttft=3.0, output_tokens_per_second=30),
        ModelSpec("dear-fast", "p", price=Price(1.0, 4.0), ttft=0.3, output_tokens_per_second=300),
    ]
    router = EmbeddedRouter(learning=False)
    patient = router.route(build_envelope(expected_output_tokens=400), models)
    hurried = router.route(build_envelope(expected_output_tokens=400, time_sensitive=True), models)
    assert patient.model == "cheap-slow" and "cheapest" in patient.reasons[-1]
    assert hurried.model == "dear-fast" and "TTFT + ITL x output tokens" in hurried.reasons[-1]


def test_a_router_written_for_two_arguments_still_works_and_keeps_caller_choices() -> None:
    class AlwaysStream:
        def route(self, envelope, models):
            m = models[0]
            return Decision(m.name, m.provider, True, Confidence(1.0, 1.0), ("always",))

    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client(PAIR, providers={"p": codec}, router=AlwaysStream()) as client:  # type: ignore[arg-type]
            assert client.route().reasons == ("always",)
            r = client.complete("hi", model="dear")
    assert r.decision is not None
    assert (r.decision.model, r.decision.stream, r.decision.source) == ("dear", False, "caller")
    assert r.decision.reasons == (
        "dear: chosen by the caller",
        "the caller chose complete()",
        "always",
    )
    with pytest.raises(ConfigurationError, match="route"):
        Client(PAIR, providers={"p": codec}, router=object())  # type: ignore[arg-type]


def test_the_decision_types_live_in_a_leaf_module() -> None:
    # The old cycle _envelope -> _errors -> _response -> _routing -> _envelope is gone: the
    # decision types import nothing of ours.
    import ast

    import tally_client._decision as leaf

    tree = ast.parse(Path(leaf.__file__).read_text())
    ours = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.level > 0 or (node.module or "").startswith("tally_client"))
    ]
    assert ours == []
