"""The public surface: twin clients match, importing is cheap, names are exported."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import tally_client
from tally_client import AsyncClient, AsyncStream, Client, Stream

TWINS = [(Client, AsyncClient), (Stream, AsyncStream)]


def _public(cls: type) -> dict[str, inspect.Signature]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__init__",):
            continue
        if callable(member):
            out[name] = inspect.signature(member)
        elif isinstance(member, property):
            out[name] = inspect.Signature()
    return out


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=["Client", "Stream"])
def test_twins_have_the_same_public_methods_and_signatures(sync: type, async_: type) -> None:
    sync_api, async_api = _public(sync), _public(async_)
    assert sorted(sync_api) == sorted(async_api)
    for name, signature in sync_api.items():
        other = async_api[name]
        # The same parameters; return types differ only by the sync/async twin classes.
        assert list(signature.parameters) == list(other.parameters), name
        for param, twin in zip(
            signature.parameters.values(), other.parameters.values(), strict=True
        ):
            assert (param.kind, param.default) == (twin.kind, twin.default), (name, param.name)


def test_async_methods_are_coroutines_where_the_sync_ones_block() -> None:
    for name in ("complete", "close"):
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(Client, name)), name
    assert inspect.iscoroutinefunction(AsyncStream.final)
    assert inspect.isasyncgenfunction(AsyncStream.text)


def test_import_loads_no_provider_sdk_or_provider_module() -> None:
    code = (
        "import sys, tally_client\n"
        "heavy = {'openai', 'anthropic', 'google.genai', 'partial_json_parser',\n"
        "         'tally_client.providers.openai_chat', 'tally_client.providers.anthropic',\n"
        "         'tally_client.providers.gemini', 'tally_client.providers.openai_responses'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_sorted_and_complete() -> None:
    assert tally_client.__all__ == sorted(tally_client.__all__)
    for name in tally_client.__all__:
        assert hasattr(tally_client, name), name
    assert tally_client.__version__


def test_client_repr_never_shows_the_key() -> None:
    client = Client(base_url="http://127.0.0.1:9/v1", api_key="sk-secret-123")
    try:
        assert "sk-secret" not in repr(client)
        assert "sk-secret" not in repr(client.providers["openai-compatible"])
    finally:
        client.close()
