"""The public surface: twin clients match, importing is cheap, names are exported."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import tally_client
from tally_client import (
    AsyncClient,
    AsyncStream,
    AuthenticationError,
    Client,
    MissingAPIKeyError,
    Stream,
)
from tally_client._config import default_setup
from tally_client.testing import ReplayServer, Reply

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
    for name in ("complete", "close", "route"):
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(Client, name)), name
    assert inspect.iscoroutinefunction(AsyncStream.final)
    assert inspect.isasyncgenfunction(AsyncStream.text)


def test_import_loads_no_provider_sdk_or_provider_module() -> None:
    # Nor what only some programs use (Batch API, pipelines, tool loops, the hosted router):
    # those names load on first use (PEP 562), which keeps `import tally_client` cheap.
    code = (
        "import sys, tally_client\n"
        "heavy = {'openai', 'anthropic', 'google.genai', 'partial_json_parser',\n"
        "         'tally_client.providers.openai_chat', 'tally_client.providers.anthropic',\n"
        "         'tally_client.providers.gemini', 'tally_client.providers.openai_responses',\n"
        "         'tally_client._batch', 'tally_client.providers._batch', 'tally_client._map',\n"
        "         'tally_client._limiter', 'tally_client._tools', 'tally_client._toolrun',\n"
        "         'tally_client.routing.remote', 'typing_extensions'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_sorted_and_complete() -> None:
    assert tally_client.__all__ == sorted(tally_client.__all__)
    for name in tally_client.__all__:
        assert hasattr(tally_client, name), name
    assert tally_client.__version__


def test_lazy_names_load_on_first_use_and_star_import_gets_them_all() -> None:
    code = (
        "import sys, tally_client\n"
        "assert 'tally_client._batch' not in sys.modules\n"
        "assert 'BatchJob' in dir(tally_client)\n"
        "from tally_client import BatchJob\n"
        "assert BatchJob.__module__ == 'tally_client._batch'\n"
        "namespace = {}\n"
        "exec('from tally_client import *', namespace)\n"
        "print(sorted(set(tally_client.__all__) - set(namespace)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        tally_client.NoSuchName  # noqa: B018


def test_client_repr_never_shows_the_key() -> None:
    client = Client(base_url="http://127.0.0.1:9/v1", api_key="sk-secret-123")
    try:
        assert "sk-secret" not in repr(client)
        assert "sk-secret" not in repr(client.providers["openai-compatible"])
    finally:
        client.close()


def test_official_host_without_a_key_names_the_environment_variable() -> None:
    from tally_client.providers.anthropic import AnthropicProvider
    from tally_client.providers.openai_chat import OpenAIChatProvider

    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIChatProvider()
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider()
    OpenAIChatProvider(base_url="http://127.0.0.1:8080/v1")  # a local server needs none


def test_providers_and_models_come_from_the_environment() -> None:
    providers, models = default_setup({"ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "g"})
    assert sorted(providers) == ["anthropic", "gemini"]
    assert {m.provider for m in models} == {"anthropic", "gemini"}
    providers, models = default_setup({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://h/v1"})
    assert providers["openai"].base_url == "http://h/v1"
    providers, models = default_setup({})
    assert list(providers) == ["local"]
    assert providers["local"].base_url == "http://127.0.0.1:8080/v1"
    assert [m.name for m in models] == ["local"]


def test_secrets_never_reach_errors_reprs_or_responses() -> None:
    key = "sk-live-SECRET-4242"
    body = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}
    with ReplayServer() as server:
        url = server.add(Reply.error(401, body))
        with Client(base_url=url + "/v1", api_key=key) as client:
            stream = client.stream("hi")
            with pytest.raises(AuthenticationError) as info:
                stream.final()
            seen = [str(info.value), repr(info.value), repr(info.value.body), repr(client),
                    repr(stream.snapshot()), repr(client.providers)]  # fmt: skip
        assert server.requests(url)[0].headers["authorization"] == f"Bearer {key}"  # it was sent
    assert not any(key in text for text in seen)
