"""The FastAPI application: gateway, admin API and health routes over one router and one store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from trunkline.config import Settings, load_settings
from trunkline.errors import CallError, ConfigError
from trunkline.prompts.registry import PromptNotFound
from trunkline.routing.router import Router
from trunkline.server import admin, anthropic_api, dashboard, openai_api, reads
from trunkline.server.auth import AuthFailure, KeyCache, require
from trunkline.server.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from trunkline.server.fast_path import GatewayApp
from trunkline.server.errors import (
    ApiError,
    error_response,
    handle_api_error,
    handle_auth_failure,
    handle_call_error,
    handle_config_error,
    handle_http_error,
    handle_validation_error,
)
from trunkline.server.gateway import Gateway
from trunkline.server.metrics import GatewayMetrics
from trunkline.store.database import open_store
from trunkline.store.keys import ApiKey, KeyNotFound, Role
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.tracing.otlp import exporter_from_settings

#: Routes served without a key, and the prefixes of static files, which need none either.
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"}) | dashboard.PUBLIC_PATHS
PUBLIC_PREFIXES = dashboard.PUBLIC_PREFIXES


def create_app(
    settings: Settings | None = None,
    *,
    router: Router | None = None,
    store_url: str | None = None,
    key_cache_ttl_s: float = 5.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """Build the gateway app.

    Args:
        settings: the configuration; by default `load_settings()`.
        router: the router the gateway calls through; by default one built
            from `settings`.
        store_url: the record store; by default the configured one. Keys,
            the audit log and every call the gateway makes are kept there.
        key_cache_ttl_s: how long a looked-up key is trusted before the
            store is read again; a revocation reaches other worker
            processes within this time.
        max_body_bytes: the largest request body accepted; a larger one
            is rejected with 413.
    """
    settings = settings or load_settings()
    store = open_store(store_url or settings.database_url())
    router = router or Router(settings)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Records are queued on the request path and committed by the writer's thread.
        writer = StoreWriter(
            store, batch_size=settings.store.batch_size, flush_interval_s=settings.store.flush_interval_s
        )
        add_exporter(writer)
        otlp = exporter_from_settings(settings)
        if otlp is not None:
            add_exporter(otlp)
        flusher = asyncio.create_task(metrics.flush_every())
        try:
            yield
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await router.aclose()
            remove_exporter(writer)
            writer.close()
            if otlp is not None:
                remove_exporter(otlp)
                otlp.close()
            store.dispose()

    app = GatewayApp(
        title="Trunkline gateway",
        summary="OpenAI- and Anthropic-compatible model gateway with keys, limits, budgets and records.",
        version="0.1.0",
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN; nothing here may.
        docs_url=None,
        redoc_url=None,
    )
    app.max_body_bytes = max_body_bytes
    app.state.settings = settings
    app.state.store = store
    app.state.keys = KeyCache(store, ttl_s=key_cache_ttl_s)
    app.state.gateway = Gateway(settings, router, metrics)

    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(AuthFailure, _handle_auth_failure)
    app.add_exception_handler(CallError, handle_call_error)
    app.add_exception_handler(KeyNotFound, _handle_not_found)
    app.add_exception_handler(PromptNotFound, _handle_not_found)
    app.add_exception_handler(ConfigError, handle_config_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    app.include_router(openai_api.router)
    app.include_router(anthropic_api.router)
    app.include_router(admin.router)
    app.include_router(reads.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard.assets_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Report liveness, without a key, once the app is up."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics_route(key: ApiKey = Depends(require(Role.METRICS))) -> Response:
        """Prometheus metrics; for admin keys and metrics keys."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _handle_auth_failure(request: Request, error: AuthFailure) -> Response:
    request.app.state.gateway.metrics.count_error("auth" if error.status == 401 else "permission")
    return await handle_auth_failure(request, error)


async def _handle_not_found(request: Request, error: KeyNotFound | PromptNotFound) -> Response:
    return error_response(request, ApiError(404, "not_found", str(error)))


def app_from_environment() -> FastAPI:
    """Build the app that `trunkline serve` starts in each worker, from the configuration file.

    ``TRUNKLINE_MAX_BODY_BYTES`` sets the largest request body, 10 MiB by default.
    """
    max_body = os.environ.get("TRUNKLINE_MAX_BODY_BYTES")
    return create_app(
        key_cache_ttl_s=float(os.environ.get("TRUNKLINE_KEY_CACHE_S", "5")),
        max_body_bytes=int(max_body) if max_body else DEFAULT_MAX_BODY_BYTES,
    )
