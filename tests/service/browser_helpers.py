"""A real browser for the dashboard tests: Debian's Chromium driven by Playwright, never a downloaded one.

Needs /usr/bin/chromium (`make test` installs it as root: apt-get install chromium). Without it (or
without the playwright package) a browser test is skipped, except in CI (env CI set) where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]  # fmt: skip


def require_browser() -> None:
    """Skip (fail in CI) unless Chromium and Playwright are there; call it before starting a server."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (as root: apt-get update && apt-get install -y chromium, or run make test)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright Python package is missing (pip install -e '.[test]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test must run in CI: {missing}")
        pytest.skip(missing)


@contextmanager
def browser_page(width: int = 1600, height: int = 1000) -> Iterator[Page]:
    """A fresh page of a headless Chromium; on leaving, the page must have raised no JavaScript error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == []
        finally:
            browser.close()


def sign_in(page: Page, token: str) -> None:
    """Sign in on the login form and wait until the map is drawn."""
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login", state="hidden")
    page.wait_for_selector("body[data-lanes-drawn]")
