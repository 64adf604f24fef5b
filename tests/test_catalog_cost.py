"""The shipped model catalog, its overrides, and the cost of a call and of each attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tally_client import Client, ConfigurationError, ModelSpec, RetryPolicy
from tally_client._config import load_provider
from tally_client._decision import Price
from tally_client._response import Attempt, Response, Usage
from tally_client.routing.catalog import load_catalog, priced
from tally_client.testing.replay import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"


def test_every_shipped_price_names_its_source_and_date() -> None:
    catalog = load_catalog(env={})
    assert {"gpt-4.1-mini", "claude-haiku-4-5", "gemini-2.5-flash"} <= set(catalog)
    for name, entry in catalog.items():
        price = entry.spec.price
        assert price is not None, name
        assert price.input > 0 and price.output >= price.input, name
        assert price.source and len(price.date) == 10, name
        assert entry.spec.capabilities <= {"json", "tools", "vision", "reasoning"}
        assert entry.spec.context_window >= 100_000
        assert entry.spec.ttft and entry.spec.output_tokens_per_second


def test_a_user_file_overrides_and_extends_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    mine = [
        {"provider": "openai", "model": "gpt-4.1-mini", "price": {"input": 9, "output": 9}},
        {"provider": "vllm", "model": "my-llama", "quality": 1, "context_window": 8192},
    ]
    path.write_text(json.dumps({"models": mine}))
    catalog = load_catalog(path, env={})
    assert catalog["gpt-4.1-mini"].spec.price == Price(9.0, 9.0)
    assert catalog["my-llama"].spec.context_window == 8192
    assert "gpt-4.1" in catalog  # the rest is kept
    via_env = load_catalog(env={"TALLY_CATALOG": str(path)})
    assert via_env["gpt-4.1-mini"].spec.price == Price(9.0, 9.0)


def test_a_malformed_catalog_is_a_configuration_error_saying_what_an_entry_needs() -> None:
    with pytest.raises(ConfigurationError, match="needs 'model' and 'provider'"):
        load_catalog([{"model": "x"}], env={})
    with pytest.raises(ConfigurationError, match="unknown capabilities"):
        load_catalog([{"model": "x", "provider": "p", "capabilities": ["telepathy"]}], env={})


def test_price_cost_is_none_when_a_count_is_missing_never_zero() -> None:
    p = Price(input=2.0, output=8.0, cached_input=0.5)
    assert p.cost(1_000_000, 0) == pytest.approx(2.0)
    assert p.cost(1_000, 500, cached_input_tokens=400) == pytest.approx(
        (600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6
    )
    assert p.cost(None, 10) is None and p.cost(10, None) is None
    assert Price(1.0, 1.0).cost(100, 10, cached_input_tokens=50) is None  # cache price unknown
    assert priced(ModelSpec("gpt-4.1", "openai")).price is not None
    assert priced(ModelSpec("unknown-model", "x")).price is None


def test_response_cost_from_the_catalog_and_reported_usage() -> None:
    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client([ModelSpec("gpt-4.1-mini", "p")], providers={"p": codec}) as client:
            r = client.complete("hi")
    assert r.usage.input_tokens == 14 and r.usage.output_tokens == 11
    assert r.cost == pytest.approx((14 * 0.40 + 11 * 1.60) / 1e6)
    assert r.attempts[-1].cost == r.cost


def test_unknown_price_or_usage_gives_none() -> None:
    with ReplayServer() as server:
        url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client([ModelSpec("house-model", "p")], providers={"p": codec}) as client:
            assert client.complete("hi").cost is None  # no price for this model
    no_usage = Response("x", attempts=(Attempt(1, None, 1, price=Price(1.0, 1.0)),))
    assert no_usage.cost is None


def test_a_failed_attempt_s_billed_tokens_count() -> None:
    full = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    body = full.body
    # Cut just before [DONE]: the usage chunk has arrived, the terminal marker has not.
    cut = full.replace(cut_after=body.rindex(b"data: [DONE]"))
    with ReplayServer() as server:
        url = server.add(Scenario(cut, full))
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        with Client(
            [ModelSpec("gpt-4.1-mini", "p")], providers={"p": codec}, retry=RetryPolicy(2)
        ) as client:
            r = client.stream("hi").final()
    first, second = r.attempts
    assert first.error is not None and first.usage.reported
    assert first.cost is not None and second.cost is not None
    assert r.cost is not None and r.cost == pytest.approx(first.cost + second.cost)
    assert r.cost > second.cost


def test_attempt_and_usage_defaults_stay_backward_compatible() -> None:
    a = Attempt(1, None, 0)
    assert a.usage == Usage() and a.cost is None
