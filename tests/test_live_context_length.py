"""Against a real llama-server (4,096 tokens of context over 2 slots: 2,048 per request): the
input is counted with its own /tokenize before anything is sent, in both directions the
characters/4 estimate gets wrong."""

from __future__ import annotations

import pytest

from tally_client import Client, ModelSpec
from tally_client._config import load_provider
from tally_client.routing import ContextLengthError
from tally_client.testing.llama import LlamaServer


def _models() -> list[ModelSpec]:
    return [ModelSpec("local", "local", context_window=2048)]


def test_counted_input_too_long_fails_before_sending(llama: LlamaServer) -> None:
    provider = load_provider("openai-chat", base_url=llama.base_url, name="local")
    # ~1,500 tokens by the estimate (fits with 100 out), far more for the tokenizer.
    prompt = "ж" * 6_000
    with (
        Client(_models(), providers={"local": provider}) as client,
        pytest.raises(ContextLengthError) as info,
    ):
        client.complete(prompt, max_tokens=100)
    assert info.value.input_tokens > 2048 > 1500 + 100
    assert info.value.output_tokens == 100 and info.value.largest_window == 2048


def test_counted_input_that_fits_is_sent_though_the_estimate_says_too_long(
    llama: LlamaServer,
) -> None:
    provider = load_provider("openai-chat", base_url=llama.base_url, name="local")
    prompt = "hello " * 1_500  # 9,000 characters: 2,250 by the estimate, ~1,500 counted
    with Client(_models(), providers={"local": provider}) as client:
        r = client.complete(prompt + "\nSay hi.", max_tokens=8)
    assert r.state == "complete" and r.usage.input_tokens is not None
    assert 1_500 <= r.usage.input_tokens < 2048 - 8
