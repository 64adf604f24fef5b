"""The README's structured output and tools snippets run, against the real local model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tally_client import Client
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

README = Path(__file__).parent.parent / "README.md"


def section_snippets(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"### {title}")
    end = text.index("\n### ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_structured_output_and_tools_snippets_run(
    llama: LlamaServer, capsys: pytest.CaptureFixture[str]
) -> None:
    snippets = section_snippets("Structured output and tools")
    assert len(snippets) == 2
    with Client(base_url=llama.base_url) as client:
        namespace: dict[str, Any] = {"client": client}
        import tally_client

        tally_client._default_client = client  # extract() uses the default client
        try:
            for code in snippets:
                exec(compile(code, str(README), "exec"), namespace)
        finally:
            tally_client._default_client = None
    person_type = namespace["Person"]
    assert isinstance(namespace["r"].parsed, person_type)
    assert all(isinstance(p, person_type) for p in namespace["people"])
    assert isinstance(namespace["person"], person_type)
    assert namespace["run"].stop_reason == "answered"
    assert capsys.readouterr().out.strip()
