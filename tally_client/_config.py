"""Which providers and models a client has when it is not told: read from the environment.

Provider modules are named here as strings and imported when a client needs them, so
`import tally_client` loads none of them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ._decision import ModelSpec
from ._errors import ConfigurationError
from .providers._base import Provider

__all__ = ["LOCAL_BASE_URL_ENV", "default_setup", "load_provider", "provider_for_model"]

LOCAL_BASE_URL_ENV = "TALLY_LOCAL_BASE_URL"
LOCAL_BASE_URL = "http://127.0.0.1:8080/v1"  # llama-server's default port
LOCAL_MODEL = "local"

PROVIDERS: dict[str, str] = {
    "openai-chat": "tally_client.providers.openai_chat:OpenAIChatProvider",
    "openai-responses": "tally_client.providers.openai_responses:OpenAIResponsesProvider",
    "anthropic": "tally_client.providers.anthropic:AnthropicProvider",
    "gemini": "tally_client.providers.gemini:GeminiProvider",
}
"""Protocol name -> provider class, as an import string."""

# provider key -> (key env vars, base URL env var, protocol). The models each provider
# serves, with their prices, come from the catalog (tally_client/routing/catalog.json).
_PROVIDER_ENV: dict[str, tuple[tuple[str, ...], str, str]] = {
    "openai": (("OPENAI_API_KEY",), "OPENAI_BASE_URL", "openai-chat"),
    "anthropic": (("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL", "anthropic"),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GOOGLE_GEMINI_BASE_URL", "gemini"),
}


def load_provider(protocol: str, **kwargs: Any) -> Provider:
    """Import and build the provider for a protocol name.

    Raises:
        ConfigurationError: an unknown protocol name.
    """
    target = PROVIDERS.get(protocol)
    if target is None:
        raise ConfigurationError(f"unknown protocol {protocol!r}: use one of {sorted(PROVIDERS)}")
    module_name, _, class_name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)


def default_setup(
    env: Mapping[str, str] | None = None,
) -> tuple[dict[str, Provider], list[ModelSpec]]:
    """The providers and models for every provider key found in the environment.

    The models of each provider found are the catalog's (`tally_client.routing.catalog`).
    Keys: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or GOOGLE_API_KEY; base URLs
    (optional, the official SDKs' names): OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
    GOOGLE_GEMINI_BASE_URL.

    With no key set, one OpenAI-compatible endpoint: `$TALLY_LOCAL_BASE_URL`, by default
    http://127.0.0.1:8080/v1 (llama-server's default), serving the model "local".
    """
    from .routing.catalog import load_catalog

    env = os.environ if env is None else env
    providers: dict[str, Provider] = {}
    models: list[ModelSpec] = []
    catalog = load_catalog(env=env)
    for key, (env_vars, base_url_var, protocol) in _PROVIDER_ENV.items():
        api_key = next((env[v] for v in env_vars if env.get(v)), None)
        if api_key is None:
            continue
        providers[key] = load_provider(protocol, api_key=api_key, base_url=env.get(base_url_var))
        # The official OpenAI, Anthropic and Gemini APIs run batches at half the live price.
        discount = 0.5 if providers[key].official else None
        models.extend(
            replace(e.spec, batch_discount=discount) for e in catalog.values() if e.provider == key
        )
    if not providers:
        base_url = env.get(LOCAL_BASE_URL_ENV) or LOCAL_BASE_URL
        local = load_provider("openai-chat", base_url=base_url, name="local")
        local.connect_hint = f". {local_hint(base_url)}"
        providers["local"] = local
        models.append(ModelSpec(LOCAL_MODEL, "local", quality=1, context_window=4096, cost=0.0))
    return providers, models


def local_hint(base_url: str) -> str:
    """What to do when no server answers at the default local endpoint (no key was set)."""
    keys = " or ".join(" / ".join(env_vars) for env_vars, *_ in _PROVIDER_ENV.values())
    return (
        f"No server answers at {base_url}, the local endpoint used when no provider key is "
        f"set. Start one with `python -m tally_client.testing.llama serve` (llama-server with "
        f"a small local model; set {LOCAL_BASE_URL_ENV} for another URL), or set {keys} to "
        "use a hosted provider"
    )


def provider_for_model(model: str, providers: Mapping[str, Provider]) -> str:
    """The provider key for a model name no ModelSpec lists: by its name, or the only one.

    Raises:
        ConfigurationError: no configured provider fits the name.
    """
    if len(providers) == 1:
        return next(iter(providers))
    prefixes = {
        "gpt-": "openai",
        "o1": "openai",
        "o3": "openai",
        "o4": "openai",
        "claude": "anthropic",
        "gemini": "gemini",
    }
    for prefix, key in prefixes.items():
        if model.startswith(prefix) and key in providers:
            return key
    raise ConfigurationError(
        f"no configured provider for model {model!r}: add ModelSpec({model!r}, provider=...) "
        f"to models=, or configure one of {sorted(providers)} for it"
    )
