"""Test helpers: a loopback server replaying recorded provider responses, with faults.

Importing this package loads only the standard library (the SDKs and anyio load on use).
"""

from .replay import CutMode, Framing, RecordedRequest, ReplayServer, Reply, Scenario
from .tally_server import TallyRequest, TallyServer

__all__ = [
    "CutMode",
    "Framing",
    "RecordedRequest",
    "ReplayServer",
    "Reply",
    "Scenario",
    "TallyRequest",
    "TallyServer",
]
