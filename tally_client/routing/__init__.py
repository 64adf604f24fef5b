"""Routing: an envelope and the configured models in, a Decision out.

Read in this order: `rules` (stream or atomic), `choice` (which model, over the priced
`catalog`), `learner` (a contextual bandit per task shape), `router` (the Router protocol and
the embedded router putting those together), `remote` (the hosted Tally router, falling back
to the embedded one), `telemetry` (outcomes sent to the hosted router in the background).

Importing this package loads only the standard library and tally_client's own modules;
httpx and sqlite3 connections are opened on first use.
"""

from .._decision import (
    CallerChoice,
    Confidence,
    Decision,
    ModelSpec,
    Outcome,
    PhasePlan,
    Price,
)
from .choice import ContextLengthError, choose_model
from .router import EmbeddedRouter, Router

__all__ = [
    "CallerChoice",
    "Confidence",
    "ContextLengthError",
    "Decision",
    "EmbeddedRouter",
    "ModelSpec",
    "Outcome",
    "PhasePlan",
    "Price",
    "Router",
    "TallyRouter",
    "choose_model",
]


def __getattr__(name: str) -> object:
    if name == "TallyRouter":
        from .remote import TallyRouter

        return TallyRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
