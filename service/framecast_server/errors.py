"""Exceptions of the framecast server: one root, each carrying its HTTP status and error code.

    ApiError
    ├── InvalidConfig (ValueError)      422  a session config that cannot work; names the field
    │   ├── PathExists                  422  a server file that exists, without ``overwrite``
    │   └── PathInUse                   409  a server path another session writes (or wrote)
    ├── Unauthorized                    401  no or wrong API key
    ├── SessionNotFound (LookupError)   404  no session with that id
    ├── PreviewNotFound (LookupError)   404  no preview frame (yet)
    ├── StateConflict                   409  the session's state does not allow the request
    ├── TooManySessions                 503  the session limit is reached
    │   └── Draining                    503  the replica is draining: it takes no new sessions
    ├── Forbidden                       403  an operator's route, called with a tenant's key
    ├── OverBudget                      503  no memory left in the budget, or the API key's quota is used up
    └── InvalidChunk (ValueError)       --   a websocket chunk does not fit its stream (session lives on)

Routes never raise HTTPException themselves: ``api/app.py`` installs one handler that maps these
to JSON error bodies ``{"error": {"code", "message", "field"?}}``, which the SDK raises as its own
``framecast.ServerError`` and subclasses (hence this root's different name).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Root of every error the framecast server raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidConfig(ApiError, ValueError):
    """The session config can't work. ``field`` is the dotted path of the culprit."""

    status = 422
    code = "invalid_config"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.field:
            body["error"]["field"] = self.field
        return body


class PathExists(InvalidConfig):
    """A server-side path where files exist, and the config does not say ``overwrite``: 422."""

    code = "path_exists"


class PathInUse(InvalidConfig):
    """A server-side path another session writes, or wrote and still keeps: 409, naming the field."""

    status = 409
    code = "path_in_use"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class SessionNotFound(ApiError, LookupError):
    status = 404
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session with id {session_id!r}")
        self.session_id = session_id


class PreviewNotFound(ApiError, LookupError):
    status = 404
    code = "preview_not_found"


class FileNotFound(ApiError, LookupError):
    status = 404
    code = "file_not_found"


class DiskFull(ApiError):
    """The output directory's disk is below FRAMECAST_MIN_FREE_DISK: no new session writes there."""

    status = 507
    code = "disk_full"


class StateConflict(ApiError):
    status = 409
    code = "state_conflict"


class TooManySessions(ApiError):
    status = 503
    code = "too_many_sessions"


class Draining(TooManySessions):
    """The replica is draining (a rolling update): its sessions go on, new ones go elsewhere."""

    code = "draining"


class Forbidden(ApiError):
    """A route for operators (admin keys), called with a tenant's key."""

    status = 403
    code = "forbidden"


class OverBudget(ApiError):
    """The server's memory budget cannot take the session now, or its API key's quota is used up."""

    status = 503
    code = "over_budget"


class InvalidChunk(ApiError, ValueError):
    """A chunk refused at the websocket; the session goes on."""

    status = 400
    code = "invalid_chunk"
