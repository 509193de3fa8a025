"""The FastAPI application factory: API routes, the dashboard's static files, CORS, security headers.

`create_app(service)` builds an app around an already built `Service` (see `context.build_service`);
nothing global, nothing at import time. The app's lifespan starts the service (idempotent: the CLI
starts it before listening so start-up errors are one line and exit 2), runs the 1 Hz WebSocket hub,
and stops the twin and flushes the audit store on shutdown.

The dashboard works offline: it is plain HTML/CSS/JS from `citysignal.dashboard`, no CDN, and the
Content-Security-Policy allows only this origin. The OpenAPI schema is at /api/openapi.json and its
reference page at /api/docs: Swagger UI from the `swagger-ui-bundle-v2` package, served from here
(/api/docs/assets) with our own start script, so it works offline too (FastAPI's own docs pages load
from a CDN and run an inline script, which the policy forbids).

Against careless or hostile clients: request bodies over `MAX_BODY_BYTES` are refused with 413
(FastAPI counts the declared Content-Length and the bytes actually streamed), and a 422 lists each
invalid field's location and message only, never the submitted value, cut to `MAX_ERRORS` entries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from swagger_ui_bundle import swagger_ui_path

from citysignal.dashboard import static_dir
from citysignal.errors import UserError
from citysignal.service.context import Service
from citysignal.service.hub import Hub
from citysignal.service.routes import router, state_payload
from citysignal.service.whatif import WhatIfRunner

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
MAX_BODY_BYTES = 64 * 1024
MAX_ERRORS = 20
MAX_LOC_CHARS = 64


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and why, without the input: pydantic's `input` and `ctx` may hold what the client sent."""
    return [{"loc": [p if isinstance(p, int) else str(p)[:MAX_LOC_CHARS] for p in e.get("loc", ())],
             "msg": str(e.get("msg", ""))[:200], "type": str(e.get("type", ""))}
            for e in exc.errors()[:MAX_ERRORS]]  # fmt: skip


def create_app(service: Service) -> FastAPI:
    static = static_dir()
    if not (static / "index.html").is_file():
        raise UserError(f"dashboard assets missing in {static} (reinstall citysignal)")
    docs_assets = Path(str(swagger_ui_path))
    if not (docs_assets / "swagger-ui-bundle.js").is_file():
        raise UserError(f"Swagger UI assets missing in {docs_assets} (reinstall swagger-ui-bundle-v2)")
    hub = Hub(lambda: state_payload(service))
    whatif = WhatIfRunner(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(service.start)
        task = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await anyio.to_thread.run_sync(whatif.stop)
            await anyio.to_thread.run_sync(service.stop)

    app = FastAPI(
        title="citysignal command center",
        summary="Real-time signal control on a SUMO twin: live state, operator overrides through the safety "
        "guard, audit log.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.service = service
    app.state.hub = hub
    app.state.whatif = whatif
    app.add_middleware(
        CORSMiddleware,
        allow_origins=service.settings.allowed_origins(),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=static), name="static")
    app.mount("/api/docs/assets", StaticFiles(directory=docs_assets), name="api-docs-assets")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/docs", include_in_schema=False)
    def api_docs() -> FileResponse:
        return FileResponse(static / "api-docs.html", headers={"Cache-Control": "no-cache"})

    return app
