"""Client and AsyncClient: route a call, then run it atomically or as a supervised stream."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack, overload

import httpx

from ._decision import CallerChoice, Decision, ModelSpec, Outcome, Price
from ._envelope import Consumer, Envelope, StructureType, build_envelope
from ._errors import ConfigurationError
from ._observe import CallInfo, Observer
from ._options import (
    check_headers,
    check_option_names,
    check_option_values,
    check_prompt,
    check_text,
)
from ._output import prompt_instruction, structured_call
from ._request import CallSpec, Message, Tool, WireRequest, normalize_messages, normalize_tools
from ._response import Response
from ._retry import RetryPolicy, Timeouts
from ._stream import AsyncStream, Stream
from ._supervisor import Supervisor
from .routing import EmbeddedRouter, Router

if TYPE_CHECKING:
    from ._batch import AsyncBatchJob, BatchJob
    from ._map import MapResult
    from ._output import StructuredCall
    from ._toolrun import AsyncToolRun, ToolRun
    from ._tools import ToolLoop
    from .providers._base import Provider

__all__ = ["AsyncClient", "CallOptions", "Client"]

T = TypeVar("T")

MAX_CONNECTIONS = 1000
"""Streams hold a connection for their whole length: httpx's default cap of 100 connections
would make the 101st concurrent stream wait for a slot, so the pool is wider. A call that
finds every connection busy for `Timeouts.connect` seconds raises `PoolTimeout`."""


def _limits(max_connections: int) -> httpx.Limits:
    if max_connections < 1:
        raise ConfigurationError(f"max_connections must be a positive int, got {max_connections!r}")
    return httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=min(100, max_connections)
    )


class BaseCallOptions(TypedDict, total=False):
    """Keyword options every call method takes (all optional); `CallOptions` adds `schema`
    (kept apart so that the methods' overloads can type `schema=Person` as `Response[Person]`).

    Attributes:
        system: a system prompt, put before the messages.
        model: skip the model choice and use this model.
        max_tokens: output limit, in tokens (also the envelope's expected output length).
        temperature: sampling temperature.
        schema: the structured output's type: a Pydantic model class, any type Pydantic's
            `TypeAdapter` accepts (dataclass, TypedDict, `list[Model]`, ...), or a JSON Schema
            dict. Sent as each provider's native structured output; the final text is
            validated strictly into `Response.parsed` (see docs/structured-output.md).
        schema_mode: "native" (default): the provider's own structured output; "prompt": the
            schema goes in a system message instead, for models without native structured
            output (the answer is still validated; fences and prose around it are tolerated).
        schema_name: the name given to that schema (default: the type's name, the dict's
            `title`, else "output").
        tools: functions the model may call: Python functions (sync or async; the signature
            and docstring give the schema), `Tool`s, or dicts with name/description/parameters.
        consumer: "human", "machine" or "pipeline": who reads the output.
        task_type: the kind of work ("chat", "summarisation", "extraction", ...).
        structure_type: the output's form: "prose", "code", "json", "list" or "mixed".
        expected_output_tokens: how long the output is expected to be, in tokens.
        time_sensitive: prefer lower latency over lower cost.
        latency_tolerance: how long the result may wait, in seconds; with consumer
            "pipeline" and 24 hours or more, `route()` may answer batch (`client.batch()`).
        timeouts: time limits for this call (default: the client's).
        retry: the retry policy for this call (default: the client's).
        extra_body: provider-specific request fields, merged into the body last.
        extra_headers: HTTP headers for this call, over the client's (ASCII str values).
        stop: stop sequences (a str or a list): the output ends before the first one.
        seed: a sampling seed (OpenAI Chat, Gemini, compatible servers).
        top_p: nucleus sampling, 0 to 1 (every protocol).
        top_k: sample among the k most likely tokens (Anthropic, Gemini, compatible servers).
        presence_penalty: OpenAI Chat, Gemini, compatible servers.
        frequency_penalty: OpenAI Chat, Gemini, compatible servers.

    A sampling option the chosen provider has no field for raises `ConfigurationError`
    naming the provider (never a silent drop); an unknown option name raises one naming the
    closest valid option.
    """

    system: str
    model: str
    max_tokens: int
    temperature: float
    schema_mode: Literal["native", "prompt"]
    schema_name: str
    tools: Sequence[Tool | Mapping[str, Any] | Callable[..., Any]]
    consumer: Consumer
    task_type: str
    structure_type: StructureType
    expected_output_tokens: int
    time_sensitive: bool
    latency_tolerance: float
    timeouts: Timeouts
    retry: RetryPolicy
    extra_body: Mapping[str, Any]
    extra_headers: Mapping[str, str]
    stop: str | Sequence[str]
    seed: int
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float


class CallOptions(BaseCallOptions, total=False):
    """Every keyword option of a call: `BaseCallOptions` and `schema` (documented there)."""

    schema: Any


CALL_OPTIONS = CallOptions.__optional_keys__ | CallOptions.__required_keys__
"""Every keyword a call method takes."""


class _BaseClient:
    """Configuration and planning shared by the twins. No I/O."""

    def __init__(
        self,
        models: Sequence[ModelSpec] | None,
        providers: Mapping[str, Provider] | None,
        router: Router | str | None,
        base_url: str | None,
        api_key: str | None,
        model: str | None,
        protocol: str,
        timeouts: Timeouts | None,
        retry: RetryPolicy | None,
        extra_headers: Mapping[str, str] | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self._own_router = router is None or isinstance(router, str)
        router = _make_router(router)
        self.extra_headers = check_headers(extra_headers, "extra_headers")
        for name, value in (("timeouts", timeouts), ("retry", retry)):
            check_option_values({name: value})
        # The provider registry loads with the first client, not with the package.
        from ._config import default_setup, load_provider

        if base_url is not None:
            if providers is not None:
                raise ConfigurationError("pass either base_url= or providers=, not both")
            endpoint = load_provider(protocol, base_url=base_url, api_key=api_key)
            providers = {endpoint.label: endpoint}
            if models is None:
                models = [ModelSpec(model or "default", endpoint.label)]
        elif model is not None and models is None:
            raise ConfigurationError("model= names the model at base_url=; pass base_url= too")
        if providers is None:
            env_providers, env_models = default_setup()
            providers = env_providers
            models = env_models if models is None else models
        if not models:
            raise ConfigurationError(
                "no models: pass models=[ModelSpec(name, provider=...)] for these providers"
            )
        for spec in models:
            if spec.provider not in providers:
                raise ConfigurationError(
                    f"model {spec.name!r} names provider {spec.provider!r}, which is not "
                    f"configured (configured: {sorted(providers)})"
                )
        from .routing.catalog import priced

        self.models: tuple[ModelSpec, ...] = tuple(priced(m) for m in models)
        self.providers: dict[str, Provider] = dict(providers)
        self.router: Router = router if router is not None else EmbeddedRouter()
        self.timeouts = timeouts if timeouts is not None else Timeouts()
        self.retry = retry if retry is not None else RetryPolicy()
        self.observers: tuple[Observer, ...] = tuple(observers)

    def __repr__(self) -> str:
        names = ", ".join(m.name for m in self.models)
        return f"{type(self).__name__}(models=[{names}], providers={sorted(self.providers)})"

    def route(
        self, prompt: str | Sequence[Message] = (), **options: Unpack[CallOptions]
    ) -> Decision:
        """The routing Decision for a call, without making it.

        Args:
            prompt: the prompt or messages (only their size is used), or nothing.
            **options: see `CallOptions`; the shape options (consumer, structure_type,
                expected_output_tokens, schema, tools, ...) are what the router reads.

        Raises:
            ConfigurationError: an unknown option, option value or model.
        """
        check_option_names(options, CALL_OPTIONS)
        check_option_values(options)
        if prompt:
            check_prompt(prompt)
        messages = normalize_messages(prompt, options.get("system")) if prompt else ()
        envelope = self._envelope(messages, options)
        return self.router.route(envelope, *self._route_args(options.get("model"), None))

    def feedback(self, response: Response, score: float) -> None:
        """Tell the router how good a routed call's answer was, to learn from.

        Replaces the outcome learned automatically from the Response (complete or not) for
        that call. Only the score and the decision id go to the router, never content.

        Args:
            response: a Response from this client's `complete()`/`stream()`/`respond()`.
            score: 0.0 (useless) .. 1.0 (just right).

        Raises:
            ConfigurationError: the Response was not routed, or the score is outside 0..1.
        """
        decision = response.decision
        if decision is None:
            raise ConfigurationError("this Response was not routed: feedback needs its Decision")
        if isinstance(score, bool) or not 0.0 <= score <= 1.0:
            raise ConfigurationError(f"score must be a number from 0.0 to 1.0, not {score!r}")
        record = getattr(self.router, "record", None)
        if record is not None:
            record(decision, _outcome(decision, response, float(score), "feedback"))

    def _envelope(
        self, messages: Sequence[Message], options: CallOptions, tokens: int | None = None
    ) -> Envelope:
        return build_envelope(
            messages,
            task_type=options.get("task_type"),
            structure_type=options.get("structure_type"),
            schema=options.get("schema"),
            tools=list(options.get("tools") or ()),
            max_tokens=options.get("max_tokens"),
            expected_output_tokens=options.get("expected_output_tokens"),
            consumer=options.get("consumer"),
            time_sensitive=options.get("time_sensitive", False),
            latency_tolerance=options.get("latency_tolerance"),
            context_tokens=tokens,
        )

    def _tool_loop(
        self, prompt: str | Sequence[Message], max_rounds: int, options: CallOptions
    ) -> ToolLoop:
        from ._tools import ToolLoop

        check_option_names(options, CALL_OPTIONS)
        messages = normalize_messages(prompt, options.get("system"))
        rest = CallOptions(**options)
        rest.pop("system", None)  # already the first message
        return ToolLoop(messages, normalize_tools(options.get("tools")), rest, max_rounds)

    def _count_target(self, envelope: Envelope) -> Provider | None:
        """The provider to ask for an exact input count: one that can count (llama-server's
        /tokenize) serving a model whose window the estimate comes near; else None."""
        from .routing.tokens import near_limit, tokenize_url

        for spec in self.models:
            if near_limit(envelope, [spec]):
                provider = self.providers[spec.provider]
                if tokenize_url(provider) is not None:
                    return provider
        return None

    def _route_args(
        self, model: str | None, stream: bool | None
    ) -> tuple[Sequence[ModelSpec], CallerChoice]:
        """The models and the caller's choices a router gets: the caller's model joins the
        configured ones when they do not list it."""
        models: Sequence[ModelSpec] = self.models
        if model is not None and not any(m.name == model for m in models):
            from ._config import provider_for_model
            from .routing.catalog import priced

            spec = priced(ModelSpec(model, provider_for_model(model, self.providers)))
            models = (*models, spec)
        return models, CallerChoice(model, stream)

    def _observer(
        self, decision: Decision, envelope: Envelope, structured: StructuredCall | None
    ) -> _Learn | None:
        record = getattr(self.router, "record", None)
        if record is None:
            return None
        return _Learn(record, decision, envelope, structured)

    def _check_call(self, prompt: str | Sequence[Message], options: CallOptions) -> None:
        check_option_names(options, CALL_OPTIONS)
        check_prompt(prompt)
        check_option_values(options)

    def _supervise(
        self,
        decision: Decision,
        envelope: Envelope,
        prompt: str | Sequence[Message],
        messages: Sequence[Message],
        options: CallOptions,
    ) -> tuple[Supervisor, WireRequest]:
        call_headers = check_headers(options.get("extra_headers"), "extra_headers")
        if decision.batch:  # one live call cannot wait for a batch: client.batch() does
            decision = replace(
                decision,
                batch=False,
                reasons=("a live call: atomic rather than the Batch API", *decision.reasons),
                source="caller",
            )
        structured = structured_call(options.get("schema"), options.get("schema_name"))
        mode = options.get("schema_mode", "native")
        if mode not in ("native", "prompt"):
            raise ConfigurationError(f"schema_mode must be 'native' or 'prompt', got {mode!r}")
        native = structured is not None and mode == "native"
        if structured is not None and not native:
            instruction = {"role": "system", "content": prompt_instruction(structured.spec)}
            messages = (instruction, *messages)
        spec = CallSpec(
            messages=tuple(messages),
            max_tokens=options.get("max_tokens"),
            temperature=options.get("temperature"),
            schema=structured.spec.json_schema if structured and native else None,
            schema_name=structured.spec.name if structured else "output",
            tools=normalize_tools(options.get("tools")),
            extra_body=options.get("extra_body") or {},
            stop=_stop_tuple(options.get("stop")),
            seed=options.get("seed"),
            top_p=options.get("top_p"),
            top_k=options.get("top_k"),
            presence_penalty=options.get("presence_penalty"),
            frequency_penalty=options.get("frequency_penalty"),
        )
        # Every text that goes out, checked once: a lone surrogate cannot be sent as UTF-8.
        check_text(prompt, "prompt" if isinstance(prompt, str) else "messages")
        check_text(options.get("system"), "system")
        check_text(spec.tools, "tools")
        check_text(spec.stop, "stop")
        check_text(spec.schema, "schema")
        check_text(spec.extra_body, "extra_body")
        provider = self.providers[decision.provider]
        call = CallInfo(
            provider.label, provider.name, provider.protocol, provider.base_url, decision.model,
            decision.stream, decision, spec.max_tokens, spec.temperature,
            spec.schema is not None, messages,
        )  # fmt: skip
        sup = Supervisor(
            provider,
            decision.model,
            stream=decision.stream,
            policy=options.get("retry") or self.retry,
            timeouts=options.get("timeouts") or self.timeouts,
            decision=decision,
            structured=structured,
            observers=self.observers,
            call=call,
        )
        sup.on_end = self._observer(decision, envelope, structured)
        wire = provider.build_request(spec, decision.model, stream=decision.stream)
        if self.extra_headers or call_headers:
            from .providers._base import auth_values

            extra = {**self.extra_headers, **call_headers}
            wire = replace(wire, headers={**wire.headers, **extra})
            sup.secrets = auth_values(extra)
        return sup, wire

    def _plan(
        self,
        prompt: str | Sequence[Message],
        options: CallOptions,
        stream: bool | None,
        count: Callable[[Provider, Sequence[Message]], int | None] | None = None,
    ) -> tuple[Supervisor, WireRequest]:
        self._check_call(prompt, options)
        messages = normalize_messages(prompt, options.get("system"))
        envelope = self._envelope(messages, options)
        target = self._count_target(envelope) if count is not None else None
        if count is not None and target is not None:
            tokens = count(target, messages)
            if tokens is not None:
                envelope = self._envelope(messages, options, tokens)
        decision = self.router.route(envelope, *self._route_args(options.get("model"), stream))
        return self._supervise(decision, envelope, prompt, messages, options)

    def _check_open(self, closed: bool) -> None:
        if closed:
            raise ConfigurationError(
                f"this {type(self).__name__} is closed (its `with` block ended or close() was "
                "called): make calls inside the block, or create a new client"
            )

    def _batch_price(self, model: str) -> Price | None:
        """A Batch API request's price for `model`: its catalog price at the provider's batch
        discount (`ModelSpec.batch_discount`, 0.5 for OpenAI, Anthropic and Gemini); None when
        either is unknown, so the Responses' `cost` is None rather than a live-price guess."""
        spec = next((m for m in self.models if m.name == model), None)
        if spec is None or spec.price is None or spec.batch_discount is None:
            return None
        d, p = spec.batch_discount, spec.price
        cached = None if p.cached_input is None else p.cached_input * d
        return replace(
            p, input=p.input * d, output=p.output * d, cached_input=cached,
            source=f"{p.source} (batch: x{d:g})",
        )  # fmt: skip

    def _batch_items(
        self, prompts: Sequence[str | Sequence[Message]], options: CallOptions
    ) -> tuple[Provider, str, list[tuple[str, WireRequest]]]:
        """Each prompt's atomic request, built by the provider codec a live call uses.

        Every item goes to the model the router (or `model=`) picks for the first one, since
        a batch job runs on one provider and, for Gemini, one model.

        Raises:
            ConfigurationError: no prompts, or the provider has no batch API.
        """
        from .providers._batch import batch_codec

        if isinstance(prompts, str) or not prompts:
            raise ConfigurationError("batch() takes a non-empty list of prompts")
        opts: Any = {"consumer": "pipeline", **options}
        items: list[tuple[str, WireRequest]] = []
        provider: Provider | None = None
        model = ""
        for index, prompt in enumerate(prompts):
            sup, wire = self._plan(prompt, opts, False)
            if provider is None:
                provider, model = sup.provider, sup.model
                batch_codec(provider)  # fail before building the rest
                opts["model"] = model
            items.append((f"item-{index}", wire))
        assert provider is not None
        return provider, model, items

    def _batch_provider(self, batch_id: str, provider: str | None) -> Provider:
        if provider is not None:
            if provider not in self.providers:
                raise ConfigurationError(
                    f"unknown provider {provider!r} (configured: {sorted(self.providers)})"
                )
            return self.providers[provider]
        wanted = (
            ("anthropic",)
            if batch_id.startswith("msgbatch_")
            else ("gemini",)
            if batch_id.startswith("batches/")
            else ("openai-chat", "openai-responses")
        )
        found = [p for p in self.providers.values() if p.protocol in wanted]
        if len(found) != 1:
            raise ConfigurationError(
                f"cannot tell which provider runs batch {batch_id!r}: pass provider="
                f" one of {sorted(self.providers)}"
            )
        return found[0]


class Client(_BaseClient):
    """Route LLM calls and run them atomically or as supervised SSE streams.

    With no arguments, the providers come from the environment (OPENAI_API_KEY,
    ANTHROPIC_API_KEY, GEMINI_API_KEY / GOOGLE_API_KEY); with none set, a local
    OpenAI-compatible server at $TALLY_LOCAL_BASE_URL (default http://127.0.0.1:8080/v1).

    Args:
        models: the models to route among; each names a provider key.
        providers: provider key -> provider codec (for example
            `{"vllm": OpenAIChatProvider(base_url="http://gpu:8000/v1", name="vllm")}`).
        router: the router: "embedded" (default: rules, a priced model choice and a
            learner, all local), "tally" (the hosted Tally router: $TALLY_API_KEY,
            $TALLY_BASE_URL; falls back to the embedded one on any failure) or a `Router`.
        base_url: shorthand for one endpoint speaking `protocol`, e.g. a local server
            "http://127.0.0.1:8080/v1" or Ollama's "http://127.0.0.1:11434/v1".
        api_key: the key for `base_url`.
        model: the model served at `base_url` (default "default", which llama-server accepts).
        protocol: "openai-chat" (default), "openai-responses", "anthropic" or "gemini".
        timeouts: default time limits (seconds).
        retry: default retry policy.
        http_client: an `httpx.Client` to use (you then close it); default: one pooled
            client per Client. On a client of your own, `close()` cannot interrupt a call
            that is still waiting for response headers (it ends at the first-token limit).
        max_connections: the pool size of the client's own `httpx.Client`: how many calls
            (streams hold one for their whole length) can be open at once; default 1,000.
        extra_headers: HTTP headers sent with every request (a call's `extra_headers=` adds
            to them and wins on a clash), as the official SDKs' `default_headers` do.
        observers: `Observer`s that follow every call of this client (logging and
            OpenTelemetry hooks; see docs/observability.md).

    Raises:
        ConfigurationError: bad arguments (see the message), including `Timeouts` or
            `RetryPolicy` values out of range and non-ASCII header values.

    Example:
        with Client() as client:
            print(client.complete("Name the capital of France.").text)
    """

    def __init__(
        self,
        models: Sequence[ModelSpec] | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        router: Router | Literal["embedded", "tally"] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        protocol: str = "openai-chat",
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        max_connections: int = MAX_CONNECTIONS,
        extra_headers: Mapping[str, str] | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(
            models, providers, router, base_url, api_key, model, protocol, timeouts, retry,
            extra_headers, observers,
        )  # fmt: skip
        self._own_http = http_client is None
        if http_client is None:
            from ._transport import SupervisedTransport, env_proxies

            limits = _limits(max_connections)
            # httpx applies HTTP(S)_PROXY / ALL_PROXY only with its own transport: behind a
            # proxy, a close() while connecting or waiting for headers ends at their limits.
            transport = None if env_proxies() else SupervisedTransport(limits)
            http_client = httpx.Client(timeout=None, limits=limits, transport=transport)
        self._http = http_client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only the client's own) and the router it made
        (flushing what it learned and its telemetry)."""
        if self._own_http:
            self._http.close()
        close = getattr(self.router, "close", None) if self._own_router else None
        if close is not None:
            close()

    @overload
    def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> Response[T]: ...
    @overload
    def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> Response: ...
    def complete(self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]) -> Response:
        """Make an atomic call and return the whole Response, with exact usage.

        Args:
            prompt: a prompt string, or messages in the Chat Completions shape.
            **options: see `CallOptions`.

        Raises:
            ProviderError: the call failed after the retries the policy allows.
            StructuredOutputError: a schema was given and the output does not match it.
            ConfigurationError: bad arguments, an unknown model, a missing key.
        """
        return self._stream(prompt, options, False).final()

    @overload
    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> Stream[T]: ...
    @overload
    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> Stream: ...
    def stream(self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]) -> Stream:
        """Start a streamed call: iterate its events or text, or block on `final()`.

        The request goes out when the stream is first iterated (or `final()` is called), so
        a stream that is never read costs nothing.

        Args:
            prompt: a prompt string, or messages in the Chat Completions shape.
            **options: see `CallOptions`.

        Raises:
            ConfigurationError: bad arguments, an unknown model, a missing key.
        """
        return self._stream(prompt, options, True)

    @overload
    def respond(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> Stream[T]: ...
    @overload
    def respond(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> Stream: ...
    def respond(self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]) -> Stream:
        """Make the call the way the router decides: streamed or atomic.

        Either way the result is a Stream (an atomic result is replayed as its events), so
        the same code iterates it or calls `final()`; `stream.decision` says what was chosen.

        Raises:
            ConfigurationError: bad arguments, an unknown model, a missing key.
        """
        return self._stream(prompt, options, None)

    def map(
        self,
        prompts: Iterable[str | Sequence[Message]],
        *,
        concurrency: int = 64,
        progress: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        **options: Unpack[CallOptions],
    ) -> MapResult:
        """Make one call per prompt, many at once, and return them in input order.

        Each item is a `respond()` call: delivered as the router decides, which for the
        default consumer "pipeline" is atomic.

        At most `concurrency` calls are in flight; the limit adapts (AIMD): a 429 or an
        overload (503, 529) halves it, at most once per round trip, and a `retry-after`
        holds new calls back until it passes; each success raises it by 1/limit, back up to
        `concurrency`. Each item is retried by the retry policy like any call; an item that
        still fails is collected in `.errors` and the run goes on. With `checkpoint`, each
        finished item is appended to that JSON Lines file at once, and a rerun with the same
        path skips the items already done (same index, prompt and options), so none is paid
        for twice; Responses are then read back from the file, keeping memory flat.
        Ctrl-C stops new calls, closes the open ones, leaves the checkpoint consistent and
        raises KeyboardInterrupt. The calls run on `concurrency` worker threads.

        Args:
            prompts: prompt strings or message lists (any iterable; read as items start).
            concurrency: the most calls in flight at once (the adaptive limit's ceiling).
            progress: show a progress bar (tqdm: `pip install 'tally-client[progress]'`)
                with tokens so far (and cost, where Responses carry one).
            checkpoint: a JSON Lines file to record results in and resume from.
            **options: see `CallOptions`, applied to every item (`consumer` defaults to
                "pipeline").

        Returns:
            A `MapResult`: `.responses` (None where an item failed), `.errors`, `.usage`,
            `.cost`, `.resumed`, `.limit_trace`.

        Raises:
            ConfigurationError: bad arguments, an unknown model, a missing key, a file
                that is not a map() checkpoint, or progress=True without tqdm.
            CheckpointError: the checkpoint could not be opened or written (a full disk):
                the run stopped first; every result written before stays in it. Raised also
                when a finished result could not be written while stopping for another
                reason (that one is its `__context__`).
            KeyboardInterrupt: Ctrl-C; the checkpoint holds every item finished before it.
        """
        from ._map import map_sync

        return map_sync(
            self,
            prompts,
            concurrency=concurrency,
            progress=progress,
            checkpoint=checkpoint,
            options=options,
        )

    def batch(
        self, prompts: Sequence[str | Sequence[Message]], **options: Unpack[CallOptions]
    ) -> BatchJob:
        """Submit the prompts to the provider's Batch API (half the price; results within
        24 hours) and return the job at once.

        Each request is the atomic request a live call would send (same codec), sent with
        custom_id "item-<index>"; results come back as the same Responses. OpenAI (and
        servers implementing /v1/files + /v1/batches, such as Llama Stack): a JSONL file
        upload then a batch; Anthropic: Message Batches; Gemini: batch mode, inline.

        Args:
            prompts: prompt strings or message lists.
            **options: see `CallOptions`; every item uses the model chosen for the first.

        Returns:
            A `BatchJob`: `.id`, `.status`, `.wait(progress=True)`, `.cancel()`.

        Raises:
            ConfigurationError: no prompts, or the chosen provider has no Batch API.
            ProviderError: the provider refused the job (after retries).
        """
        from ._batch import BatchJob, drive
        from .providers._batch import batch_codec

        provider, model, items = self._batch_items(prompts, options)
        codec = batch_codec(provider)
        retry = options.get("retry") or self.retry
        status = drive(self._http, provider, codec.submit(items, model), retry)
        structured = structured_call(options.get("schema"), options.get("schema_name"))
        return BatchJob(
            self._http, codec, status, model=model, structured=structured, retry=retry,
            price=self._batch_price(model),
        )  # fmt: skip

    def batch_job(
        self,
        batch_id: str,
        *,
        provider: str | None = None,
        schema: Any = None,
    ) -> BatchJob:
        """Resume a batch job by id, from this or another process (reads its status).

        Args:
            batch_id: the job's id (`job.id`).
            provider: the provider key; needed only when the id does not tell ("msgbatch_"
                is Anthropic, "batches/" Gemini, else OpenAI) among the configured ones.
            schema: the schema the job was submitted with, to parse structured output.

        Raises:
            ConfigurationError: the provider cannot be told, or has no Batch API.
            ProviderError: the provider does not know the job, or could not be reached.
        """
        from ._batch import BatchJob, drive
        from .providers._batch import batch_codec

        endpoint = self._batch_provider(batch_id, provider)
        codec = batch_codec(endpoint)
        status = drive(self._http, endpoint, codec.get(batch_id), self.retry)
        return BatchJob(
            self._http,
            codec,
            status,
            model="",
            structured=structured_call(schema, None),
            retry=self.retry,
        )

    def run_tools(
        self,
        prompt: str | Sequence[Message],
        *,
        max_rounds: int = 10,
        **options: Unpack[CallOptions],
    ) -> ToolRun:
        """Run a tool loop: call the model, run the tools it asks for, repeat until it answers.

        Each round is routed like `respond()`: with tools in scope the tool phase is atomic,
        and the round after tool results (the synthesis) streams when its decision says so.
        The model's tool calls are validated against their schemas and run (several at once
        in threads); a tool that raises, or invalid arguments, become an error result for
        the model, the exception kept on the round. See docs/structured-output.md.

        Args:
            prompt: a prompt string, or messages.
            max_rounds: the most model calls (default 10); reaching it ends the run with
                `stop_reason` "max_rounds".
            **options: see `CallOptions` (applied to every round); `tools` is required:
                Python functions (sync or async), or Tools with a `function`.

        Raises:
            ConfigurationError: no tools, a tool without a function, bad arguments.
        """
        from ._toolrun import ToolRun

        return ToolRun(self._stream, self._tool_loop(prompt, max_rounds, options))

    def _stream(
        self, prompt: str | Sequence[Message], options: CallOptions, stream: bool | None
    ) -> Stream:
        from .routing.tokens import count_sync

        self._check_open(self._http.is_closed)
        sup, wire = self._plan(prompt, options, stream, lambda p, m: count_sync(self._http, p, m))
        return Stream(self._http, sup, wire)


class AsyncClient(_BaseClient):
    """The async twin of `Client`: the same arguments and methods, awaited.

    Example:
        async with AsyncClient() as client:
            response = await client.complete("Name the capital of France.")
    """

    def __init__(
        self,
        models: Sequence[ModelSpec] | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        router: Router | Literal["embedded", "tally"] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        protocol: str = "openai-chat",
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = MAX_CONNECTIONS,
        extra_headers: Mapping[str, str] | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(
            models, providers, router, base_url, api_key, model, protocol, timeouts, retry,
            extra_headers, observers,
        )  # fmt: skip
        self._own_http = http_client is None
        if http_client is None:
            http_client = httpx.AsyncClient(timeout=None, limits=_limits(max_connections))
        self._http = http_client

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (only the client's own) and the router it made."""
        if self._own_http:
            await self._http.aclose()
        if self._own_router:
            aclose = getattr(self.router, "aclose", None)
            if aclose is not None:
                await aclose()
            elif (close := getattr(self.router, "close", None)) is not None:
                close()

    async def route(  # type: ignore[override]
        self, prompt: str | Sequence[Message] = (), **options: Unpack[CallOptions]
    ) -> Decision:
        """The routing Decision for a call, without making it; see `Client.route`.

        Awaited: a hosted router is asked without blocking the event loop.
        """
        check_option_names(options, CALL_OPTIONS)
        check_option_values(options)
        if prompt:
            check_prompt(prompt)
        messages = normalize_messages(prompt, options.get("system")) if prompt else ()
        envelope = self._envelope(messages, options)
        return await self._aroute(envelope, options.get("model"), None)

    async def _aroute(self, envelope: Envelope, model: str | None, stream: bool | None) -> Decision:
        models, choice = self._route_args(model, stream)
        aroute = getattr(self.router, "aroute", None)
        if aroute is not None:
            decision: Decision = await aroute(envelope, models, choice)
            return decision
        return self.router.route(envelope, models, choice)

    @overload
    async def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> Response[T]: ...
    @overload
    async def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> Response: ...
    async def complete(
        self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]
    ) -> Response:
        """Make an atomic call; see `Client.complete`."""
        self._check_open(self._http.is_closed)
        self._check_call(prompt, options)
        messages = normalize_messages(prompt, options.get("system"))
        envelope = self._envelope(messages, options)
        target = self._count_target(envelope)
        if target is not None:
            from .routing.tokens import count_async

            tokens = await count_async(self._http, target, messages)
            if tokens is not None:
                envelope = self._envelope(messages, options, tokens)
        decision = await self._aroute(envelope, options.get("model"), False)
        sup, wire = self._supervise(decision, envelope, prompt, messages, options)
        return await AsyncStream(self._http, sup, wire).final()

    @overload
    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> AsyncStream[T]: ...
    @overload
    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> AsyncStream: ...
    def stream(
        self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]
    ) -> AsyncStream:
        """Start a streamed call; see `Client.stream`."""
        return self._stream(prompt, options, True)

    @overload
    def respond(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: type[T],
        **options: Unpack[BaseCallOptions],
    ) -> AsyncStream[T]: ...
    @overload
    def respond(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,  # a JSON Schema dict, or a type mypy cannot take as type[T]
        **options: Unpack[BaseCallOptions],
    ) -> AsyncStream: ...
    def respond(
        self, prompt: str | Sequence[Message], **options: Unpack[CallOptions]
    ) -> AsyncStream:
        """Make the call the way the router decides; see `Client.respond`."""
        return self._stream(prompt, options, None)

    async def map(
        self,
        prompts: Iterable[str | Sequence[Message]],
        *,
        concurrency: int = 64,
        progress: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        **options: Unpack[CallOptions],
    ) -> MapResult:
        """Make one call per prompt, many at once; see `Client.map`.

        The calls are tasks of one task group; cancelling the awaiting task (Ctrl-C under
        `asyncio.run`) cancels them all, closing their connections, and the checkpoint
        keeps every item finished before.
        """
        from ._map import map_async

        return await map_async(
            self,
            prompts,
            concurrency=concurrency,
            progress=progress,
            checkpoint=checkpoint,
            options=options,
        )

    async def batch(
        self, prompts: Sequence[str | Sequence[Message]], **options: Unpack[CallOptions]
    ) -> AsyncBatchJob:
        """Submit the prompts to the provider's Batch API; see `Client.batch`."""
        from ._batch import AsyncBatchJob, adrive
        from .providers._batch import batch_codec

        provider, model, items = self._batch_items(prompts, options)
        codec = batch_codec(provider)
        retry = options.get("retry") or self.retry
        status = await adrive(self._http, provider, codec.submit(items, model), retry)
        structured = structured_call(options.get("schema"), options.get("schema_name"))
        return AsyncBatchJob(
            self._http, codec, status, model=model, structured=structured, retry=retry,
            price=self._batch_price(model),
        )  # fmt: skip

    async def batch_job(
        self,
        batch_id: str,
        *,
        provider: str | None = None,
        schema: Any = None,
    ) -> AsyncBatchJob:
        """Resume a batch job by id; see `Client.batch_job`."""
        from ._batch import AsyncBatchJob, adrive
        from .providers._batch import batch_codec

        endpoint = self._batch_provider(batch_id, provider)
        codec = batch_codec(endpoint)
        status = await adrive(self._http, endpoint, codec.get(batch_id), self.retry)
        return AsyncBatchJob(
            self._http,
            codec,
            status,
            model="",
            structured=structured_call(schema, None),
            retry=self.retry,
        )

    def run_tools(
        self,
        prompt: str | Sequence[Message],
        *,
        max_rounds: int = 10,
        **options: Unpack[CallOptions],
    ) -> AsyncToolRun:
        """Run a tool loop; see `Client.run_tools` (async tools awaited as tasks, sync ones in
        worker threads, never on the event loop)."""
        from ._toolrun import AsyncToolRun

        return AsyncToolRun(self._stream, self._tool_loop(prompt, max_rounds, options))

    def _stream(
        self, prompt: str | Sequence[Message], options: CallOptions, stream: bool | None
    ) -> AsyncStream:
        self._check_open(self._http.is_closed)
        if isinstance(self.router, EmbeddedRouter) or not hasattr(self.router, "aroute"):
            sup, wire = self._plan(prompt, options, stream)
            return AsyncStream(self._http, sup, wire)
        # A router that does network I/O: the request waits for its async answer, made when
        # the stream is first iterated; until then `decision` is the local fallback's.
        self._check_call(prompt, options)
        messages = normalize_messages(prompt, options.get("system"))
        envelope = self._envelope(messages, options)
        local = getattr(self.router, "fallback", None) or EmbeddedRouter(learning=False)
        provisional = local.route(envelope, *self._route_args(options.get("model"), stream))
        sup, wire = self._supervise(provisional, envelope, prompt, messages, options)
        sup.on_end = None

        async def prepare() -> tuple[Supervisor, WireRequest]:
            decision = await self._aroute(envelope, options.get("model"), stream)
            return self._supervise(decision, envelope, prompt, messages, options)

        return AsyncStream(self._http, sup, wire, prepare)


def _stop_tuple(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _make_router(router: Router | str | None) -> Router | None:
    if router is None or router == "embedded":
        return None
    if router == "tally":
        from .routing.remote import TallyRouter

        return TallyRouter()
    if isinstance(router, str):
        raise ConfigurationError(
            f"router={router!r}: pass 'embedded' (default), 'tally' (the hosted router: "
            "TALLY_API_KEY, TALLY_BASE_URL) or an object with a route() method"
        )
    from .routing.router import as_router

    return as_router(router)


class _Learn:
    """The router's learning hook for one call (`Supervisor.on_end`): tells the router how
    the call went. A slotted object: a closure over the same four values costs 0.4 KB a call.
    """

    __slots__ = ("decision", "envelope", "record", "structured")

    def __init__(
        self,
        record: Callable[[Decision, Outcome, Envelope], object],
        decision: Decision,
        envelope: Envelope,
        structured: StructuredCall | None,
    ) -> None:
        self.record = record
        self.decision = decision
        self.envelope = envelope
        self.structured = structured

    def __call__(self, response: Response) -> None:
        if response.state == "cancelled":
            return  # the caller stopped it: says nothing about the model
        # Output that fails its schema is a failed call (the check is remembered, so the
        # caller's own `final()` does not validate again).
        structured = self.structured
        bad_json = (
            structured is not None
            and response.state == "complete"
            and not structured.valid(response)
        )
        failed = response.finish_reason in ("error", "content_filter")
        if response.state != "complete" or bad_json or failed:
            success = 0.0
        elif response.finish_reason == "length":
            success = 0.5  # cut at max_tokens: usable or not, the router cannot tell
        else:
            success = 1.0
        decision = self.decision
        self.record(decision, _outcome(decision, response, success, response.state), self.envelope)


def _outcome(decision: Decision, response: Response, success: float, state: str) -> Outcome:
    usage = response.usage
    return Outcome(
        decision_id=decision.id,
        model=decision.model,
        success=success,
        state=state,
        finish_reason=response.finish_reason,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost=response.cost,
        latency=response.metrics.total_seconds,
        stream=decision.stream,
        attempts=max(1, len(response.attempts)),
    )
