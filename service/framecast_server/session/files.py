"""The files of a session a client may fetch (``GET /v1/sessions/{id}/files/{name}``).

- An HLS or DASH output's playlist and segments, while the session streams and after: the names
  its ``SegmentPlan`` owns, in its directory, finished ones only (a ``.tmp`` being written is not
  one). A playlist is never cached (it changes with every segment); a segment is immutable (its
  name is never written twice in a session).
- A rotating recording's files and their list, while the session streams and after (the newest
  grows until the next begins).
- Any other server file of the session once the session is closed.

A name is one path component and must be a regular file, not a symlink, when asked for: nothing
outside the session's own files is ever served, whatever the name.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from framecast_server.errors import FileNotFound, StateConflict
from framecast_server.planning.plan import SessionPlan

#: Content types by extension; a player checks a playlist's.
MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".flv": "video/x-flv",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".aac": "audio/aac",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".csv": "text/csv",
}
PLAYLIST_CACHE = "no-store"
SEGMENT_CACHE = "private, max-age=31536000, immutable"
FILE_CACHE = "private, no-cache"


@dataclass(frozen=True)
class SessionFile:
    """A file to serve: where it is, its content type and cache policy."""

    path: str
    media_type: str
    cache_control: str


def find(session_id: str, plan: SessionPlan, closed: bool, name: str) -> SessionFile:
    """The session's file called ``name``.

    Raises:
        FileNotFound: no such file of this session (or not yet: a segment still being written).
        StateConflict: a server file that is ready once the session is closed.
    """
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise FileNotFound(f"session {session_id} has no file {name!r}")
    media_type = MEDIA_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
    for output in plan.files:
        segments = output.segments
        if segments is not None and segments.owns(name):
            if segments.rotating:  # the newest file grows until the next begins
                cache = FILE_CACHE
            else:
                cache = PLAYLIST_CACHE if name == segments.playlist else SEGMENT_CACHE
            return SessionFile(_regular(session_id, os.path.join(segments.directory, name)), media_type, cache)
    for output in plan.files:
        if output.segments is None and output.path is not None and os.path.basename(output.path) == name:
            if not closed:
                raise StateConflict(f"{name!r} of session {session_id} is ready once the session is closed")
            return SessionFile(_regular(session_id, output.path), media_type, FILE_CACHE)
    raise FileNotFound(f"session {session_id} has no file {name!r}")


def _regular(session_id: str, path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise FileNotFound(f"session {session_id} has no file {os.path.basename(path)!r} (yet)") from None
    if not stat.S_ISREG(mode):  # a symlink planted in the output directory is not followed
        raise FileNotFound(f"session {session_id} has no file {os.path.basename(path)!r}")
    return path
