"""The FastAPI application: ``create_app(settings)`` wires settings, sessions, routes, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from framecast_server.api.dashboard import router as dashboard_router
from framecast_server.api.hosts import HostCheck, server_names
from framecast_server.api.ingest import router as ingest_router
from framecast_server.api.routes import public as public_router
from framecast_server.api.routes import router as rest_router
from framecast_server.config import Settings
from framecast_server.errors import ApiError
from framecast_server.metrics import Metrics, route_of
from framecast_server.planning import ffmpeg
from framecast_server.session.manager import SessionManager

log = logging.getLogger(__name__)


#: Tags pydantic puts into an error's location for a member of a tagged union (a stream's or a
#: destination's ``type``); they are not part of the config's own path.
_UNION_TAGS = {"streams": {"video", "audio"}, "destination": {"client", "server_file", "url", "discard"}}


def _field(loc: tuple[str | int, ...]) -> str:
    """The config path of an error's location, as config checks name fields: ``streams.0.width``
    (pydantic says ``body.streams.0.video.width``)."""
    parts = list(loc[1:] if loc[:1] == ("body",) else loc)
    if len(parts) >= 2 and parts[0] == "destination" and parts[1] in _UNION_TAGS["destination"]:
        del parts[1]
    elif len(parts) >= 3 and parts[0] == "streams" and isinstance(parts[1], int) and parts[2] in _UNION_TAGS["streams"]:
        del parts[2]
    return ".".join(str(p) for p in parts)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the framecast server app. Settings are injected; nothing is read at import time."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = SessionManager(settings, metrics)
        metrics.watch(manager)
        manager.start()
        app.state.manager = manager
        # Listing encoders and muxers takes a moment; do it once, off the event loop. Meanwhile the
        # first spare encoder starts (and with it the forkserver, ~0.5 s), so that the first session
        # opens as fast as any other.
        await asyncio.to_thread(lambda: (ffmpeg.muxers(), ffmpeg.audio_encoders(), ffmpeg.output_protocols()))
        await manager.spares.filled()
        log.info(
            "framecast ready; outputs under %s; RGB frames converted with %s",
            settings.output_dir.resolve(),
            settings.rgb_converter,
        )
        try:
            yield
        finally:
            await manager.shutdown()

    app = FastAPI(
        title="framecast",
        summary="Stream tensors into FFmpeg encoders: files, file-like objects, live outputs.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    metrics = Metrics(settings.replica_id)
    app.state.metrics = metrics
    if not settings.api_keys:  # keyless: answer only to loopback names and the operator's (DNS rebinding)
        app.add_middleware(HostCheck, allowed=server_names(settings.server_names, settings.public_url, settings.host))

    if settings.cors_origins:  # off unless the operator names the origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Range"],
            expose_headers=["Content-Length", "Content-Range", "Accept-Ranges"],
        )
    app.middleware("http")(_time_requests)
    app.include_router(rest_router)
    app.include_router(public_router)
    app.include_router(dashboard_router)
    app.include_router(ingest_router)
    app.add_exception_handler(ApiError, _server_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    return app


# -- what create_app installs: one request timer, and the one place errors become answers ---------


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _time_requests(request: Request, call_next: Any) -> Any:
    """Every request's latency, by method, route template and status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        _metrics(request).requests.labels(request.method, route_of(request.scope), str(status)).observe(
            time.perf_counter() - started
        )


async def _server_error(request: Request, exc: ApiError) -> JSONResponse:
    """A domain error: its own status and ``{"error": {"code", "message", "field"?}}``."""
    _metrics(request).errors.labels(exc.code).inc()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered 500 without details."""
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse(
        {
            "error": {
                "code": "internal_error",
                "message": f"unexpected server error ({type(exc).__name__}); the server log has the details",
            }
        },
        status_code=500,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (no route, wrong method) in the same body shape."""
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that is not JSON (400), or a config the schema refuses (422, naming each field)."""
    metrics = _metrics(request)
    errors = exc.errors()
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    empty = any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors)
    if broken is not None or empty:  # not a config at all: 400, saying why
        metrics.errors.labels("bad_request").inc()
        if broken is not None:
            reason = (broken.get("ctx") or {}).get("error", broken.get("msg", ""))
            where = broken["loc"][-1] if broken.get("loc") else "?"
            message = f"request body is not valid JSON: {reason} (at character {where})"
        else:
            message = "request body is empty; expected a session config as a JSON object"
        return JSONResponse({"error": {"code": "bad_request", "message": message}}, status_code=400)
    metrics.errors.labels("invalid_config").inc()
    details = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in errors]
    first = details[0] if details else {"field": "", "message": "invalid request"}
    message = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details)
    return JSONResponse(
        {"error": {"code": "invalid_config", "message": message, "field": first["field"], "details": details}},
        status_code=422,
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("framecast")
    except Exception:
        return "0+unknown"
