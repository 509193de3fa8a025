"""The dashboard in a real browser (`browser_helpers`), against `citysignal serve`.

The screenshot is left in the test's tmp folder (printed with -s).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from browser_helpers import browser_page, require_browser, sign_in
from service_helpers import serving, wait_for


def _busy_pixels(png: bytes) -> int:
    """Pixels of a screenshot that are not the map's background colour."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    background = img[2, 2]
    return int((np.abs(img - background).sum(axis=2) > 0.1).sum())


def test_dashboard_shows_the_city_live_and_audits_an_override(tmp_path: Path) -> None:
    require_browser()
    args = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "3600",
            "--port", "0", "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, browser_page(height=900) as page:
        page.goto(served.url + "/")
        # reads are token-protected: the page asks for a token first
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#token", "not-a-token")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:has-text('token refused')")
        sign_in(page, "dev-operator-token")
        assert page.text_content("#user") == "operator (operator)"

        # the map is drawn from the SUMO geometry: every lane, and pixels on the canvas
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
