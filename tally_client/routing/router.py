"""Step 4: the Router protocol and the embedded router, which puts steps 1-3 together.

For a call: the candidates (capabilities, context window: `choice.candidates`), then the
model (the caller's, else the learner's pick among two or more candidates, else the static
choice), then the delivery mode for that model (`rules.delivery`, the caller's mode winning).
The caller's choices are inputs, so the Decision is one coherent account: `source="caller"`
where the caller fixed something, and the reasons say what the rules would have done.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from .._decision import NO_CHOICE, CallerChoice, Confidence, Decision, ModelSpec, Outcome
from .._envelope import Envelope
from .._errors import ConfigurationError
from .choice import (
    DEFAULT_OUTPUT_TOKENS,
    ContextLengthError,
    candidates,
    choose_model,
    needed_quality,
)
from .learner import EXPLORE_BELOW, EXPLORE_SCALE, Learner, shape_key
from .rules import batch_reason, delivery

__all__ = ["LEARNING_ENV", "EmbeddedRouter", "Router", "as_router"]

LEARNING_ENV = "TALLY_ROUTER_LEARNING"
"""Set to 0 to turn the embedded router's learning off by default."""


@runtime_checkable
class Router(Protocol):
    """Anything that turns an envelope and the configured models into a Decision.

    Optional methods a client uses when present: `aroute` (the async twin; a router doing
    network I/O must have it so `AsyncClient` never blocks its event loop), `record(decision,
    outcome, envelope)` (learn from a finished call), `close()`.
    """

    def route(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        """Choose a model among `models` and a delivery mode for `envelope`.

        `choice` holds what the caller fixed (model, mode); the Decision must keep it.

        Raises:
            ConfigurationError: `models` is empty, or the caller's model is not among them.
            ContextLengthError: no model's window holds the input plus the expected output.
        """
        ...


def _prior(model: ModelSpec, need: int) -> float:
    return max(0.05, 0.8 - 0.15 * max(0, need - model.quality))


class EmbeddedRouter:
    """The default router: streaming rules, a priced model choice, and a learner, all local.

    It needs no network and never fails a call for a usable envelope.

    Args:
        learning: learn from outcomes (default: on, unless $TALLY_ROUTER_LEARNING is "0").
        store: the learner's SQLite file (default $TALLY_ROUTER_STORE, else
            ~/.cache/tally_client/router.sqlite3); ":memory:" persists nothing.
        seed: seeds the learner's exploration, for reproducible decisions.
        cost_weight: the learner's cost-quality trade-off (see `Learner`).
        explore_below: the learner explores only while its confidence is below this
            (default 1.0: it draws on every call, and explores as often as its posterior
            doubts the best model).
        explore_scale: how much wider than the posterior the exploration draws are (default
            1.0: plain Thompson sampling; see `Learner`).
    """

    def __init__(
        self,
        *,
        learning: bool | None = None,
        store: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        cost_weight: float = 0.1,
        explore_below: float = EXPLORE_BELOW,
        explore_scale: float = EXPLORE_SCALE,
    ) -> None:
        if learning is None:
            learning = os.environ.get(LEARNING_ENV, "1").strip().lower() not in (
                "0",
                "false",
                "no",
                "off",
            )
        self.learner: Learner | None = (
            Learner(
                store,
                seed=seed,
                cost_weight=cost_weight,
                explore_below=explore_below,
                explore_scale=explore_scale,
            )
            if learning
            else None
        )

    def route(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        """See `Router.route`."""
        source: str = "embedded"
        exploration = False
        shape = shape_key(envelope)
        model_reasons: tuple[str, ...]
        if choice.model is not None:
            spec = next((m for m in models if m.name == choice.model), None)
            if spec is None:
                raise ConfigurationError(
                    f"model {choice.model!r} is not among the models given to the router: "
                    "add a ModelSpec for it"
                )
            size = envelope.context_tokens + (envelope.expected_output_tokens or 0)
            if spec.context_window < size:
                raise ContextLengthError(
                    envelope.context_tokens,
                    envelope.expected_output_tokens or 0,
                    spec.context_window,
                )
            model_conf, model_reasons = 1.0, (f"{spec.name}: chosen by the caller",)
            source = "caller"
        else:
            fits = candidates(envelope, models)
            if self.learner is not None and len(fits) > 1:
                need = needed_quality(envelope)
                out = envelope.expected_output_tokens or DEFAULT_OUTPUT_TOKENS
                pick = self.learner.choose(
                    shape,
                    [m.name for m in fits],
                    [_prior(m, need) for m in fits],
                    [m.expected_cost(envelope.context_tokens, out) for m in fits],
                    [m.e2e_seconds(out) for m in fits] if envelope.time_sensitive else None,
                )
                spec = fits[pick.index]
                model_conf, model_reasons = pick.confidence, pick.reasons
                exploration = pick.exploration
            else:
                spec, model_conf, model_reasons = choose_model(envelope, fits)
        stream, stream_conf, reasons, phases = delivery(envelope, spec, choice.stream)
        if choice.stream is not None:
            source = "caller"
        batch = batch_reason(envelope, spec) if choice.stream is None else None
        if batch is not None:
            stream, reasons = False, (batch, *reasons)
        return Decision(
            model=spec.name,
            provider=spec.provider,
            stream=stream,
            confidence=Confidence(model_conf, stream_conf),
            reasons=(*reasons, *model_reasons),
            exploration=exploration,
            phases=phases,
            source=source,  # type: ignore[arg-type]
            price=spec.price,
            shape=shape,
            batch=batch is not None,
        )

    async def aroute(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        """`route`, for AsyncClient (the embedded router does no network I/O)."""
        return self.route(envelope, models, choice)

    def record(
        self, decision: Decision, outcome: Outcome, envelope: Envelope | None = None
    ) -> None:
        """Learn from a finished call (or from the caller's feedback on it)."""
        if self.learner is not None and decision.shape is not None:
            self.learner.record(decision.shape, outcome.model, outcome.success, decision.id)

    def reset(self) -> None:
        """Forget everything learned (no-op with learning off)."""
        if self.learner is not None:
            self.learner.reset()

    def close(self) -> None:
        """Write what was learned to the store."""
        if self.learner is not None:
            self.learner.close()


class _TwoArgumentRouter:
    """Adapts a router written for `route(envelope, models)` (before caller choices were
    router inputs): the caller's model narrows `models` to it, and the caller's mode is
    applied with a reason saying so, the router's own reasons kept whole."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def route(
        self, envelope: Envelope, models: Sequence[ModelSpec], choice: CallerChoice = NO_CHOICE
    ) -> Decision:
        if choice.model is not None:
            models = [m for m in models if m.name == choice.model]
        decision: Decision = self.inner.route(envelope, models)
        if choice.stream is None and choice.model is None:
            return decision
        said = []
        if choice.model is not None:
            said.append(f"{choice.model}: chosen by the caller")
        stream = decision.stream
        if choice.stream is not None:
            said.append(f"the caller chose {'stream()' if choice.stream else 'complete()'}")
            stream = choice.stream
        return replace(decision, stream=stream, source="caller", reasons=(*said, *decision.reasons))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def as_router(router: Any) -> Router:
    """`router` itself, or an adapter when its `route` takes no `choice` argument.

    Raises:
        ConfigurationError: `router` has no `route` method.
    """
    route = getattr(router, "route", None)
    if not callable(route):
        raise ConfigurationError(
            f"router={router!r}: pass 'embedded' (default), 'tally' (the hosted router: "
            "TALLY_API_KEY, TALLY_BASE_URL) or an object with a route() method"
        )
    try:
        params = inspect.signature(route).parameters
    except (TypeError, ValueError):
        return router  # type: ignore[no-any-return]
    takes_choice = (
        "choice" in params
        or len(params) >= 3
        or any(p.kind is p.VAR_POSITIONAL for p in params.values())
    )
    return router if takes_choice else _TwoArgumentRouter(router)
