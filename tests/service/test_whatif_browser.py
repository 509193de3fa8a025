"""The what-if panel in a real browser: Debian's Chromium driven by Playwright, against `citysignal serve`.

On grid4x4 at x20 with a 2-minute horizon: an operator chooses two candidates and races them; the panel
shows the race running with a progress bar, then the KPI table (best first) and one queue curve per
candidate; the operator cannot deploy city-wide, an admin can, and the switch reaches the audit log with
the race's id. Needs /usr/bin/chromium, as `browser_helpers` says (skipped without it, except in CI).
"""

from __future__ import annotations

from pathlib import Path

from browser_helpers import browser_page, require_browser, sign_in
from service_helpers import serving, wait_for

CANDIDATES = {"fixed", "maxpressure"}


def test_what_if_panel_races_and_an_admin_deploys_the_winner(tmp_path: Path) -> None:
    require_browser()
    args = ["grid4x4", "--controller", "sotl", "--speed", "20", "--begin", "0", "--end", "3600",
            "--port", "0", "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, browser_page() as page:
        page.goto(served.url + "/")
        sign_in(page, "dev-operator-token")

        # choose the candidates and a short horizon, then race
        page.wait_for_selector("#whatif-candidates input[value='sotl']")
        boxes = page.locator("#whatif-candidates input")
        offered = {boxes.nth(i).get_attribute("value") for i in range(boxes.count())}
        assert CANDIDATES | {"sotl"} <= offered and "actuated" not in offered
        for i in range(boxes.count()):
            boxes.nth(i).set_checked(boxes.nth(i).get_attribute("value") in CANDIDATES)
        page.fill("#whatif-horizon", "120")
        page.click("#btn-whatif")
        page.wait_for_selector("#toast.show:has-text('what-if race')")

        # while it runs: the progress bar shows, the race button waits
        page.wait_for_selector("#whatif-panel:is([data-status='forking'], [data-status='running']) "
                               "#whatif-run:not([hidden]) .progress")  # fmt: skip
        assert page.is_disabled("#btn-whatif")
        page.wait_for_selector("#whatif-panel[data-status='done']", timeout=120_000)
        assert page.get_attribute("#whatif-panel", "data-progress") == "1"
        assert page.is_enabled("#btn-whatif")

        # then the KPI table, best first, and one queue curve per candidate
        rows = page.locator("#whatif-body tr")
        assert rows.count() == 2
        assert {rows.nth(i).get_attribute("data-candidate") for i in range(2)} == CANDIDATES
        winner = rows.nth(0).get_attribute("data-candidate")
        assert "best" in (rows.nth(0).get_attribute("class") or "")
        delays = [float(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(2)]
        assert delays == sorted(delays)
        assert "NaN" not in page.inner_text("#whatif-body")  # every column is a metric the rows carry
        assert page.get_attribute("#whatif-chart", "data-lines") == "2"
        assert int(page.get_attribute("#whatif-chart", "data-points") or 0) >= 2 * 10
        assert f"{winner} is best" in page.text_content("#whatif-status")
        race_id = int(page.get_attribute("#whatif-panel", "data-race") or 0)
        shot = tmp_path / "whatif.png"
        page.locator("#whatif-panel").screenshot(path=str(shot))
        print(f"what-if panel screenshot: {shot}")

        # deploying the winner is a city-wide switch: an admin's, through the guard and the audit log
        assert page.is_disabled("#btn-whatif-deploy")
        page.click("#signout")
        sign_in(page, "dev-admin-token")
        page.wait_for_selector(f"#whatif-panel[data-race='{race_id}'][data-status='done']")
        page.click("#btn-whatif-deploy")
        page.wait_for_selector(f"#toast.show:has-text('{winner} now runs 16 intersection(s) from what-if race')")
        wait_for(lambda: page.text_content("#city-controller") == winner, timeout=10)
        with served.client() as http:
            switch = http.get("/api/events?action=controller_switch").json()[0]
            done = http.get("/api/events?action=whatif_done").json()[0]
        assert switch["actor"] == "admin" and switch["detail"]["whatif"] == race_id
        assert switch["detail"]["controller"] == winner and switch["result"] == "applied"
        assert done["detail"]["race"] == race_id and done["detail"]["winner"] == winner
