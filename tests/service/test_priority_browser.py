"""The priority panel in a real browser: Debian's Chromium driven by Playwright, against `citysignal serve`
with emergency vehicles added (cologne1, 60 per hour, x10). The panel lists the preemption in force and the
vehicle's request, the map rings the preempted intersection, and the audit log shows the preemption.
Needs /usr/bin/chromium, as `browser_helpers` says (skipped without it, except in CI)."""

from __future__ import annotations

from pathlib import Path

from browser_helpers import browser_page, require_browser, sign_in
from bundled import bundled_layout
from service_helpers import serving


def test_the_dashboard_shows_an_active_preemption_and_its_request(tmp_path: Path) -> None:
    require_browser()
    inter = bundled_layout("cologne1").ids[0]
    args = ["cologne1", "--controller", "maxpressure", "--speed", "10", "--begin", "25200", "--end", "27000",
            "--emergency-per-hour", "60", "--port", "0", "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, browser_page() as page:
        page.goto(served.url + "/")
        sign_in(page, "dev-viewer-token")

        page.wait_for_selector("#priority-panel:not([hidden])")
        active = page.locator(f"#priority-active li[data-kind='emergency'][data-intersection='{inter}']")
        active.wait_for(timeout=90_000)
        text = active.inner_text()
        assert "preemption" in text and "cs_emergency" in text
        vehicle = next(word for word in text.split() if word.startswith("cs_emergency"))
        page.wait_for_selector("body:not([data-priority-rings='0'])")  # drawn on the map too
        request = page.locator("#priority-calls li[data-kind='emergency']", has_text=vehicle)
        request.filter(has_text="served").first.wait_for(timeout=10_000)  # the request the preemption answers
        page.locator("#log-body tr[data-action='emergency_preemption']", has_text=inter).first.wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "priority.png"))
