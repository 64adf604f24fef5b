"""Shared fixtures: the real local model (llama-server) and the byte-exact replay server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tally_client.testing.llama import LlamaServer, LlamaServerError

# The embedded router learns into a SQLite store; the tests' calls must not teach the user's
# own store (~/.cache/tally_client/router.sqlite3), so they get a throw-away one.
os.environ["TALLY_ROUTER_STORE"] = os.path.join(
    tempfile.mkdtemp(prefix="tally-router-"), "router.sqlite3"
)
# The tests choose their providers themselves: keys or proxies in the developer's environment
# must not change what a test sees (nor may a real key be sent to a loopback server).
for _name in (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "TALLY_API_KEY",
    "TALLY_BASE_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
):  # fmt: skip
    os.environ.pop(_name, None)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the real model is `live` even if unmarked, so `-m "not live"` (the
    offline selection `make test-lowest` runs) never starts llama-server."""
    for item in items:
        if "llama" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio: trio is not a dependency (some anyio versions
    otherwise parametrize over every backend they know)."""
    return "asyncio"
