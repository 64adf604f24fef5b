"""Moved: routing is now the package `tally_client.routing`; this name stays for old imports."""

from ._decision import Confidence, Decision, ModelSpec, PhasePlan
from .routing import EmbeddedRouter, Router, choose_model

__all__ = [
    "Confidence",
    "Decision",
    "EmbeddedRouter",
    "ModelSpec",
    "PhasePlan",
    "Router",
    "choose_model",
]
