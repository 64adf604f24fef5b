"""Fixtures of the web tests: a real headless Chromium, and where artifacts go."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(
    os.environ.get("TALLY_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A directory for test artifacts (screenshots, measurements): build/test-artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright. Never skipped: fails if it cannot start."""
    from playwright.sync_api import sync_playwright

    try:
        manager = sync_playwright().start()
    except Exception as exc:
        pytest.fail(f"Playwright could not start: {exc}")
    try:
        try:
            browser = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            pytest.fail(f"the browser tests need {CHROMIUM} (make test installs it): {exc}")
        yield browser
        browser.close()
    finally:
        manager.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 900, "height": 640})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
