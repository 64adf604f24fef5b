"""Against a real llama-server: the sampling options reach it under each protocol's names.

The same seed gives the same sampled text (Chat Completions), a stop sequence ends the output
before it, and the Anthropic protocol's `stop_sequences`/`top_k`/`top_p` are accepted.
"""

from __future__ import annotations

import pytest

from tally_client import Client, Response
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

PROMPT = "Write a short poem about the sea."


def test_the_same_seed_samples_the_same_text(llama: LlamaServer) -> None:
    with Client(base_url=llama.base_url) as client:

        def sample(seed: int) -> Response:
            return client.complete(
                PROMPT, seed=seed, temperature=1.5, top_k=200, top_p=0.98, max_tokens=24
            )

        first, again = sample(1234), sample(1234)
        others = {sample(s).text for s in (1, 2, 3)}
    assert first.complete and first.text
    assert again.text == first.text
    assert others - {first.text}  # other seeds sample something else: the seed was used


def test_a_stop_sequence_ends_the_output(llama: LlamaServer) -> None:
    with Client(base_url=llama.base_url) as client:
        free = client.complete(PROMPT, temperature=0, max_tokens=40).text
        words = free.split()
        assert len(words) > 3, free
        stop = words[2]
        cut = client.complete(PROMPT, temperature=0, max_tokens=40, stop=[stop])
    assert cut.complete and cut.finish_reason == "stop"
    assert stop not in cut.text and free.startswith(cut.text.rstrip())


def test_anthropic_protocol_takes_its_sampling_fields(llama: LlamaServer) -> None:
    with Client(base_url=llama.root_url, protocol="anthropic", model="smollm2") as client:
        response = client.complete(
            PROMPT, temperature=0, top_k=20, top_p=0.9, stop=["\n\n"], max_tokens=24
        )
    assert response.complete and response.text
    assert "\n\n" not in response.text
