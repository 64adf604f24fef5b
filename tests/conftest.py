"""Shared fixtures: the real local model (llama-server) and the byte-exact replay server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tally_client.testing.llama import LlamaServer, LlamaServerError

# The embedded router learns into a SQLite store; the tests' calls must not teach the user's
# own store (~/.cache/tally_client/router.sqlite3), so they get a throw-away one.
os.environ.setdefault(
    "TALLY_ROUTER_STORE", os.path.join(tempfile.mkdtemp(prefix="tally-router-"), "router.sqlite3")
)


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    """A real llama-server with SmolLM2-135M on 127.0.0.1, for the whole session.

    It is never skipped: if it cannot be provisioned or started, every live test fails with
    the reason, so CI cannot pass without the real model.
    """
    try:
        server = LlamaServer.start()
    except LlamaServerError as exc:
        pytest.fail(f"the live suite needs llama-server and it could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
