"""The API reference at /api/docs: Swagger UI served by the service itself (no CDN), linked from the dashboard.

First every asset the page names is fetched from the service (TestClient); then, in Debian's Chromium
(skipped without it, except in CI, as `browser_helpers` says), the page renders every operation,
loads nothing from another origin, breaks no rule of the Content-Security-Policy, and a viewer token
entered in "Authorize" runs GET /api/me from the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import browser_page, require_browser
from fastapi.testclient import TestClient
from service_helpers import auth, serving, strict_settings

from citysignal.service.app import create_app
from citysignal.service.context import build_service

ASSET = re.compile(r'(?:src|href)="([^"#]+)"')


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("docs") / "audit.db"
    service = build_service(strict_settings(f"sqlite:///{db}"), "grid4x4", "fixed", speed=20, begin=0, end=1800)
    with TestClient(create_app(service)) as c:
        yield c


def test_docs_page_and_all_its_assets_come_from_the_service(client: TestClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = [a for a in ASSET.findall(page.text) if not a.startswith("data:")]
    assert "/api/docs/assets/swagger-ui-bundle.js" in assets and "/api/docs/assets/swagger-ui.css" in assets
    assert "/static/api-docs.js" in assets
    assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets  # no other origin
    for asset in assets:
        res = client.get(asset)
        assert res.status_code == 200, asset
        if asset.endswith(".js"):
            assert "javascript" in res.headers["content-type"] and len(res.content) > 100
        if asset.endswith(".css"):
            assert res.headers["content-type"].startswith("text/css")
    assert "SwaggerUIBundle" in client.get("/api/docs/assets/swagger-ui-bundle.js").text
    start = client.get("/static/api-docs.js").text
    assert '"/api/openapi.json"' in start and "validatorUrl: null" in start  # the local schema, no validator call
    assert "<script>" not in page.text  # the policy forbids inline scripts


def test_dashboard_links_the_api_reference(client: TestClient) -> None:
    assert re.search(r'<a id="api-docs"[^>]* href="/api/docs"', client.get("/").text)


def test_docs_need_no_token_but_the_api_still_does(client: TestClient) -> None:
    assert client.get("/api/docs").status_code == 200 and client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=auth("vera")).status_code == 200


def test_docs_render_offline_in_a_browser_and_try_a_request(tmp_path: Path) -> None:
    require_browser()
    args = ["grid4x4", "--controller", "fixed", "--speed", "20", "--begin", "0", "--end", "1800", "--port", "0",
            "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, browser_page(width=1280, height=900) as page:
        problems: list[str] = []
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        requested: list[str] = []
        page.on("request", lambda req: requested.append(req.url))
        page.goto(served.url + "/api/docs")
        page.wait_for_selector("body[data-docs-ready]", timeout=30000)
        assert page.locator(".opblock").count() >= 10  # every operation of the schema
        assert page.get_by_text("/api/intersections/{inter_id}/override", exact=True).count() >= 1

        me = "#operations-service-me_api_me_get"
        page.click("button.authorize")
        page.fill(".modal-ux input", "dev-viewer-token")
        page.click(".modal-ux button.authorize")
        page.click(".modal-ux button.btn-done")
        page.click(f"{me} .opblock-summary")
        page.click(f"{me} button.try-out__btn")
        page.click(f"{me} button.execute")
        page.wait_for_selector(f"{me} .live-responses-table .response-col_status")
        answer = page.inner_text(f"{me} .live-responses-table")
        assert "200" in answer and '"role": "viewer"' in answer

        shot = tmp_path / "api-docs.png"
        page.screenshot(path=str(shot))
        print(f"API docs screenshot: {shot}")
        assert problems == []
        assert requested and all(u.startswith(served.url) for u in requested), requested
