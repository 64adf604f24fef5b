"""Reading an already-configured official OpenAI client, to build a provider codec from it.

`OpenAIChatProvider.from_sdk(client)` and `OpenAIResponsesProvider.from_sdk(client)` take an
`openai.OpenAI`, `AsyncOpenAI`, `AzureOpenAI` or `AsyncAzureOpenAI` and copy what decides where
and how requests go: the base URL, the key, the organization / project headers, the client's
default headers and default query. Nothing here imports `openai` (it costs about a second):
the settings are read off the object. Checked against openai 3.54 (`_client.py`,
`lib/azure.py`, `lib/_client_auth.py`); the attributes used exist since openai 1.x.

Azure OpenAI (openai `lib/azure.py`):
- An API key goes in an `api-key` header; an Entra ID token (`azure_ad_token`) as
  `Authorization: Bearer`. Every request carries `?api-version=...` (the client's default query).
- Built with `azure_endpoint` + `azure_deployment`, the base URL is
  `{endpoint}/openai/deployments/{deployment}`: Chat Completions goes there, but the SDK sends
  `/responses` to `{endpoint}/openai/responses` (not a per-deployment route).
- Built without a deployment, the SDK inserts `/deployments/{model}` before
  `/chat/completions` per request; OpenAIChatProvider has no per-model path, so that case is
  refused with the fix to apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from ._base import Provider

__all__ = ["OpenAIClientSettings", "from_openai_sdk", "read_openai_client"]

P = TypeVar("P", bound=Provider)

AZURE_KEY_SENTINEL = "<missing API key>"
"""What AzureOpenAI stores as `api_key` when it authenticates with an Entra ID token."""

# Headers every SDK request carries that describe the SDK itself, not the user's setup.
_SDK_HEADERS = frozenset({"accept", "content-type", "user-agent"})


@dataclass(frozen=True)
class OpenAIClientSettings:
    """Where and how an OpenAI SDK client sends its requests.

    Attributes:
        base_url: the client's base URL, without the trailing slash.
        api_key: the key to send as `Authorization: Bearer`, or None (Azure sends it in
            `headers` instead).
        headers: the user's headers: organization, project, default_headers, and for Azure
            the `api-key` header or the Entra ID `Authorization` header. Holds secrets: never
            log it.
        query: the default query parameters (Azure: `api-version`).
        azure: the client is an AzureOpenAI / AsyncAzureOpenAI.
        azure_endpoint: the Azure resource endpoint when the client was built from one.
    """

    base_url: str
    api_key: str | None
    headers: dict[str, str] = field(repr=False)
    query: dict[str, str]
    azure: bool = False
    azure_endpoint: str | None = None


def read_openai_client(client: Any) -> OpenAIClientSettings:
    """Read an OpenAI SDK client's request settings without importing `openai`.

    Raises:
        ConfigurationError: `client` is not an OpenAI SDK client, or it authenticates per
            request (an `api_key` callable, an Azure AD token provider, workload identity or
            a `provider=`), which one fixed header cannot reproduce.
    """
    kind = type(client).__name__
    if not all(hasattr(client, a) for a in ("base_url", "api_key", "default_headers")):
        raise ConfigurationError(
            f"from_sdk() takes an openai.OpenAI, AsyncOpenAI, AzureOpenAI or AsyncAzureOpenAI "
            f"client; got {kind}"
        )
    dynamic = (
        ("_api_key_provider", "an api_key callable"),
        ("_azure_ad_token_provider", "azure_ad_token_provider"),
        ("workload_identity", "workload_identity"),
        ("_provider_runtime", "provider="),
    )
    for attr, what in dynamic:
        if getattr(client, attr, None) is not None:
            raise ConfigurationError(
                f"this {kind} authenticates with {what}, fetching credentials per request; "
                "tally_client sends a fixed key. Build the provider directly instead, e.g. "
                "OpenAIResponsesProvider(base_url=..., headers={'Authorization': "
                "f'Bearer {token}'}), and rebuild it when the token expires"
            )
    headers: dict[str, str] = {}
    for key, value in dict(client.default_headers).items():
        lower = key.lower()
        if (
            isinstance(value, str)
            and lower not in _SDK_HEADERS
            and not lower.startswith("x-stainless")
        ):
            headers[key] = value
    query = {k: str(v) for k, v in dict(client.default_query or {}).items() if _is_value(v)}
    base_url = str(client.base_url).rstrip("/")
    has_auth = any(k.lower() in ("authorization", "api-key") for k in headers)
    key = client.api_key if isinstance(client.api_key, str) and client.api_key else None
    if not any(c.__name__ == "BaseAzureClient" for c in type(client).__mro__):
        return OpenAIClientSettings(base_url, None if has_auth else key, headers, query)
    token = getattr(client, "_azure_ad_token", None)
    if not has_auth:
        if isinstance(token, str) and token:
            headers["Authorization"] = f"Bearer {token}"
        elif key and key != AZURE_KEY_SENTINEL:
            headers["api-key"] = key
    endpoint = getattr(client, "_azure_endpoint", None)
    return OpenAIClientSettings(
        base_url,
        None,
        headers,
        query,
        azure=True,
        azure_endpoint=str(endpoint).rstrip("/") if endpoint else None,
    )


def _is_value(value: object) -> bool:
    """False for the SDK's `Omit` / `NotGiven` markers and None."""
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


def from_openai_sdk(cls: type[P], client: Any, *, name: str | None = None) -> P:
    """Build an OpenAI provider codec (Chat Completions or Responses) from an SDK client.

    Args:
        cls: OpenAIChatProvider or OpenAIResponsesProvider (or a subclass).
        client: a configured `openai.OpenAI` / `AsyncOpenAI` / `AzureOpenAI` /
            `AsyncAzureOpenAI`.
        name: the provider name for responses and errors (default "openai", "azure-openai"
            for Azure clients).

    Raises:
        ConfigurationError: see `read_openai_client`; also an Azure client without a
            deployment used for Chat Completions, and a client with default query parameters
            (Azure's `api-version`) for a provider class that cannot send a query.
    """
    settings = read_openai_client(client)
    base_url = settings.base_url
    if settings.azure:
        name = name or "azure-openai"
        if cls.protocol == "openai-responses" and settings.azure_endpoint:
            base_url = f"{settings.azure_endpoint}/openai"  # /responses is not per deployment
        elif cls.protocol == "openai-chat" and "/deployments" not in urlsplit(base_url).path:
            raise ConfigurationError(
                "this AzureOpenAI client has no deployment, so the SDK puts each call's model "
                "in the path (/deployments/{model}/chat/completions), which "
                f"{cls.__name__} does not do: create it with azure_deployment=..., or use "
                "OpenAIResponsesProvider.from_sdk (Responses is not per deployment)"
            )
    return cls(
        base_url=base_url,
        api_key=settings.api_key,
        headers=settings.headers,
        name=name,
        query=settings.query,
    )
