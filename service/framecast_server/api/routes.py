"""REST routes: sessions, capabilities, health, readiness and draining. Domain errors are mapped
in ``app.py``."""

from __future__ import annotations

import ipaddress
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from framecast_server.api import fleet
from framecast_server.auth import Caller, require_api_key
from framecast_server.errors import Forbidden, PreviewNotFound, StateConflict
from framecast_server.models import (
    Capabilities,
    DrainRequest,
    DrainStatus,
    ErrorBody,
    SessionConfig,
    SessionCreated,
    SessionInfo,
)
from framecast_server.planning import ffmpeg
from framecast_server.session import files
from framecast_server.session.manager import Readiness, SessionManager
from framecast_server.session.session import SessionState


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give."""
    text = {
        400: "Malformed request body",
        401: "Missing or wrong API key",
        403: "An operator's route, and the key is not an admin key",
        404: "No such session",
        409: "The session's state does not allow this; or (path_in_use) another session writes that path",
        422: "The config cannot work; names the field (path_exists: a server file that exists, without overwrite)",
        503: "Session limit reached (too_many_sessions), or the replica is draining (draining)",
        507: "The output directory's disk is nearly full (FRAMECAST_MIN_FREE_DISK)",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


#: The caller of a route: 401 unless the request carries a key this server has (auth.py).
CallerDep = Annotated[Caller, Depends(require_api_key)]

router = APIRouter(dependencies=[Depends(require_api_key)], responses=_errors(401))
#: Routes that need no API key.
public = APIRouter()


def _manager(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.manager
    return manager


def _stream_url(request: Request, session_id: str) -> str:
    base = request.app.state.settings.public_url or str(request.base_url)
    base = base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/v1/sessions/{session_id}/stream"


@router.post(
    "/v1/sessions",
    status_code=201,
    response_model=SessionCreated,
    tags=["sessions"],
    responses=_errors(400, 409, 422, 503, 507),
)
async def create_session(config: SessionConfig, request: Request, caller: CallerDep) -> SessionCreated:
    """Open an output and start its encoder. Answers with where and how to stream chunks."""
    manager = _manager(request)
    session = await manager.create(config, owner=caller.owner, same_host=_from_loopback(request))
    return SessionCreated(
        **session.info().model_dump(),
        stream_url=_stream_url(request, session.id),
        token=session.token,
        max_message_bytes=manager.settings.max_message_bytes,
        shared_memory=session.client_memory.describe() if session.client_memory is not None else None,
    )


def _from_loopback(request: Request) -> bool:
    """Whether the request came from this machine (so the client can open files in /dev/shm)."""
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


@router.get("/v1/sessions", response_model=list[SessionInfo], tags=["sessions"])
async def list_sessions(
    request: Request,
    caller: CallerDep,
    scope: Annotated[
        Literal["fleet", "replica"],
        Query(description="fleet: every replica's (FRAMECAST_PEERS) sessions; replica: this one's only"),
    ] = "fleet",
) -> Response:
    """The caller's sessions, open or finished (every tenant's for an admin key), oldest first. With
    FRAMECAST_PEERS, the whole fleet's: peers that did not answer are named in the
    ``Framecast-Unanswered`` header (JSON), and the list has what the others said."""
    manager = _manager(request)
    sessions = manager.visible(caller)
    for session in sessions:
        session.watched()
    own = [s.info() for s in sessions]
    peers = manager.settings.peer_list
    if scope == "replica" or not peers:
        return JSONResponse([info.model_dump(mode="json") for info in own])
    theirs, missing = await fleet.peer_sessions(
        peers, manager.settings.replica_id, request.headers.get("authorization", "")
    )
    listed = fleet.merge(own, theirs)
    return JSONResponse([info.model_dump(mode="json") for info in listed], headers=fleet.unanswered_header(missing))


@router.get("/v1/sessions/{session_id}", response_model=SessionInfo, tags=["sessions"], responses=_errors(404))
async def get_session(session_id: str, request: Request, caller: CallerDep) -> SessionInfo:
    """State and per-stream counters of one session."""
    session = _manager(request).get(session_id, caller)
    session.watched()
    return session.info()


@router.delete("/v1/sessions/{session_id}", response_model=SessionInfo, tags=["sessions"], responses=_errors(404))
async def close_session(session_id: str, request: Request, caller: CallerDep) -> SessionInfo:
    """Flush the encoders, write the trailer and close the output. Idempotent."""
    return (await _manager(request).close(session_id, caller)).info()


@router.get(
    "/v1/sessions/{session_id}/output",
    tags=["sessions"],
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file; for a recording that rotates, the list of its files to download",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}, "application/json": {}},
        },
        **_errors(404, 409),
    },
)
async def download_output(session_id: str, request: Request, caller: CallerDep) -> Response:
    """Download a closed session's server-side output file; for a recording that rotates, its
    files as a list (``{"segments": [{"name", "start", "duration", "url"}]}``), each to download."""
    session = _manager(request).get(session_id, caller)
    files = session.plan.files
    if not files:
        raise StateConflict(f"session {session_id} writes no server-side file")
    if session.state is not SessionState.CLOSED:
        raise StateConflict(f"session {session_id} is {session.state.value}; its output is ready once closed")
    first = session.info().outputs[files[0].index]
    if first.segments is not None:
        return JSONResponse({"segments": [segment.model_dump() for segment in first.segments]})
    path = files[0].path  # the first: each file of a session is also in the output directory's listing
    assert path is not None  # a server file's plan has its path
    return FileResponse(path, filename=path.rsplit("/", 1)[-1])


@router.get(
    "/v1/sessions/{session_id}/files/{name}",
    tags=["sessions"],
    response_class=FileResponse,
    responses={
        200: {"description": "The file; byte ranges are served (206)"},
        206: {"description": "Part of the file (Range)"},
        **_errors(404, 409),
    },
)
async def session_file(session_id: str, name: str, request: Request, caller: CallerDep) -> FileResponse:
    """One of a session's files: an HLS or DASH output's playlist and segments while it streams
    (``playback_url`` names the playlist), any server file once the session is closed."""
    session = _manager(request).get(session_id, caller)
    found = files.find(session_id, session.plan, session.state is SessionState.CLOSED, name)
    return FileResponse(found.path, media_type=found.media_type, headers={"Cache-Control": found.cache_control})


@router.get(
    "/v1/sessions/{session_id}/preview",
    tags=["sessions"],
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The latest frame, 320 pixels wide"},
        **_errors(404),
    },
)
async def preview(session_id: str, request: Request, caller: CallerDep, stream: int = 0) -> Response:
    """The latest video frame of a stream as a small JPEG (refreshed about twice a second while
    anyone asks for it or for the session; the first request after a quiet spell may be a 404)."""
    session = _manager(request).get(session_id, caller)
    session.watched()
    jpeg = session.previews.get(stream)
    if jpeg is None:
        raise PreviewNotFound(f"session {session_id} has no preview for stream {stream} (yet)")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/v1/capabilities", response_model=Capabilities, tags=["server"])
async def capabilities(request: Request) -> Capabilities:
    """What this server's FFmpeg really has: versions, muxers, encoders, output protocols; and the
    destination types its settings allow."""
    allowed = request.app.state.settings.allowed_schemes
    kinds = ["client", "server_file"] if "file" in allowed else []
    if any(scheme != "file" for scheme in allowed):
        kinds.append("url")
    kinds.append("discard")
    return Capabilities(
        versions=ffmpeg.versions(),
        ffmpeg=ffmpeg.version(),
        muxers=ffmpeg.muxers(),
        audio_encoders=ffmpeg.audio_encoders(),
        video_encoders=ffmpeg.video_encoders(),
        protocols=list(ffmpeg.publish_schemes()),
        destinations=kinds,
        rgb_conversion=request.app.state.settings.rgb_converter,
        compression=["zstd"],
    )


@router.get(
    "/metrics",
    tags=["server"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
async def metrics(request: Request, caller: CallerDep) -> Response:
    """Prometheus metrics: sessions by state, chunks and bytes in, packets and bytes out, drops,
    reconnects, errors by kind, request latencies; for admin keys also each open session's queue
    depth, waiting output and encode rates (labelled with session ids, which other tenants must not
    learn)."""
    return Response(request.app.state.metrics.exposition(caller.admin), media_type=CONTENT_TYPE_LATEST)


@public.get("/healthz", tags=["server"])
async def healthz(request: Request) -> dict[str, Any]:
    """Liveness: answers as long as the event loop runs (a draining replica is alive: its sessions
    still need their requests)."""
    manager = _manager(request)
    return {
        "status": "ok",
        "replica": manager.settings.replica_id,
        "sessions": len(manager.active()),
        "draining": manager.drain_started is not None,
    }


@public.get(
    "/readyz",
    tags=["server"],
    responses={503: {"description": "Takes no new sessions: full (FRAMECAST_MAX_SESSIONS), or draining"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness for new sessions: 200 while this replica takes them, 503 when it is full or
    draining. A proxy sends new sessions to ready replicas only; a session's own requests go to its
    replica whatever this says."""
    manager = _manager(request)
    state = manager.readiness()
    body = {
        "status": state.value,
        "replica": manager.settings.replica_id,
        "sessions": len(manager.active()),
        "max_sessions": manager.settings.max_sessions,
    }
    return JSONResponse(body, status_code=200 if state is Readiness.READY else 503)


@router.post("/v1/admin/drain", response_model=DrainStatus, tags=["server"], responses=_errors(403))
async def drain(
    request: Request, caller: CallerDep, body: Annotated[DrainRequest | None, Body()] = None
) -> DrainStatus:
    """Drain this replica for a rolling update: it takes no new sessions from now on (503
    ``draining``; /readyz answers 503), its live sessions go on until they end or the deadline
    passes (``timeout``, default FRAMECAST_DRAIN_TIMEOUT), then what is left is finalized and the
    server exits. For operators (admin keys; anyone on a keyless server)."""
    if not caller.admin:
        raise Forbidden("draining a replica is for operators: use an admin key (FRAMECAST_ADMIN_KEYS)")
    manager = _manager(request)
    manager.start_draining(body.timeout if body is not None else None)
    return _drain_status(manager)


@router.get("/v1/admin/drain", response_model=DrainStatus, tags=["server"], responses=_errors(403))
async def drain_status(request: Request, caller: CallerDep) -> DrainStatus:
    """Whether this replica is draining, and how many live sessions it still has."""
    if not caller.admin:
        raise Forbidden("a replica's drain is for operators: use an admin key (FRAMECAST_ADMIN_KEYS)")
    return _drain_status(_manager(request))


def _drain_status(manager: SessionManager) -> DrainStatus:
    left = None
    if manager.drain_deadline is not None:
        left = max(0.0, manager.drain_deadline - time.monotonic())
    return DrainStatus(
        replica=manager.settings.replica_id,
        draining=manager.drain_started is not None,
        sessions=len(manager.active()),
        seconds_left=None if left is None else round(left, 1),
    )
