"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `citysignal serve`.

Needs /usr/bin/chromium (`make test` installs it as root: apt-get install chromium); Playwright never
downloads a browser here. Without Chromium the test is skipped, except in CI (env CI set) where it fails.
The screenshot is left in the test's tmp folder (printed with -s).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from service_helpers import serving, wait_for

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]  # fmt: skip


def _require_browser() -> None:
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


def _busy_pixels(png: bytes) -> int:
    """Pixels of a screenshot that are not the map's background colour."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    background = img[2, 2]
    return int((np.abs(img - background).sum(axis=2) > 0.1).sum())


def test_dashboard_shows_the_city_live_and_audits_an_override(tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    args = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "3600",
            "--port", "0", "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served.url + "/")

            # reads are token-protected: the page asks for a token first
            page.wait_for_selector("#login:not([hidden])")
            page.fill("#token", "not-a-token")
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#login-error:has-text('token refused')")
            page.fill("#token", "dev-operator-token")
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#login", state="hidden")
            assert page.text_content("#user") == "operator (operator)"

            # the map is drawn from the SUMO geometry: every lane, and pixels on the canvas
            page.wait_for_selector("body[data-lanes-drawn]")
            assert page.get_attribute("body", "data-lanes-drawn") == "240"
            page.wait_for_selector("#conn.on")
            assert _busy_pixels(page.locator("#map").screenshot()) > 5000

            # KPIs change live: the clock moves and KPI samples (every 10 s simulated) arrive
            clock0 = page.text_content("#clock")
            samples0 = int(page.get_attribute("body", "data-kpi-samples") or 0)
            wait_for(lambda: page.text_content("#clock") != clock0, timeout=10)
            wait_for(lambda: int(page.get_attribute("body", "data-kpi-samples") or 0) > samples0, timeout=10)
            assert int(page.get_attribute("#chart-queue", "data-points") or 0) >= 1
            assert page.text_content("#kpi-violations") == "0"

            # an override from the intersection panel, through the guard, into the audit log
            page.select_option("#inter-select", "B1")
            page.wait_for_selector("#inter-phases li")
            page.fill("#reason", "browser test")
            page.click("#btn-hold")
            page.wait_for_selector("#toast.show:has-text('B1: hold')")
            row = page.locator("#log-body tr[data-action='override']", has_text="B1")
            row.first.wait_for(timeout=10000)
            assert "operator (operator)" in row.first.inner_text()
            page.wait_for_selector("#inter-status .badge.override")
            with served.client() as http:
                logged = http.get("/api/events?action=override&target=B1").json()
            assert logged and logged[0]["actor"] == "operator" and logged[0]["detail"]["reason"] == "browser test"

            time.sleep(1.0)  # one more frame so the screenshot shows the override ring
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 20000
            assert errors == []
        finally:
            browser.close()
