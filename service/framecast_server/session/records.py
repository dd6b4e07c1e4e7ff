"""Finished sessions that outlive a restart: a small record written when a session ends, read back
when the server starts.

A replica that restarts (a crash, a rolling update) would otherwise forget every finished session,
and with them the downloads and file listings its clients still ask it for: the files are on its
volume, but no session id leads to them. So each session that ends writes
``<output dir>/.sessions/<id>.json``: its final ``SessionInfo``, the API key fingerprint that owns
it, when it ended, and, if it wrote server files, its config with every network destination left
out (those carry credentials, and nothing of them is served after the end), from which its files
are planned again. At startup the newest ``keep_finished_sessions`` records become
``FinishedSession`` objects, which answer the routes a finished session answers (info, list,
download, files, DELETE) and guard their paths as a remembered session does; older records are
deleted. A record that no longer plans (settings changed since) is skipped with a warning.

Records are written whole to a temporary name and renamed, so a crash never leaves half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framecast_server.config import Settings
from framecast_server.errors import ApiError
from framecast_server.models import SessionConfig, SessionInfo
from framecast_server.planning.plan import SessionPlan, make_plan
from framecast_server.session.session import SessionState

log = logging.getLogger(__name__)

#: Where the records live, under the output directory (never served: no session owns the name).
RECORDS_DIR = ".sessions"
#: Bumped when a record's shape changes; records of another version are skipped.
VERSION = 1


def records_dir(settings: Settings) -> Path:
    return settings.output_dir / RECORDS_DIR


def kept_config(config: SessionConfig, plan: SessionPlan) -> dict[str, Any] | None:
    """What a record keeps of the session's config: nothing for a session without server files;
    else the config with each network destination made ``discard`` (its URL carries credentials),
    so that every destination keeps its index and the server files plan again as they did."""
    if not plan.files:
        return None
    data = config.model_dump(mode="json", exclude_none=True)
    if data.get("destinations"):
        data["destinations"] = [{"type": "discard"} if d.get("type") == "url" else d for d in data["destinations"]]
    return data


def write(
    settings: Settings,
    session_id: str,
    owner: str | None,
    config: SessionConfig,
    plan: SessionPlan,
    info: SessionInfo,
    ended_at: float,
) -> None:
    """Keep the record of a session that ended (the manager calls it from ``Session.on_ended``)."""
    directory = records_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "version": VERSION,
        "id": session_id,
        "owner": owner,
        "ended_at": ended_at,
        "config": kept_config(config, plan),
        "info": info.model_dump(mode="json"),
    }
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, separators=(",", ":"))
        os.replace(temporary, directory / f"{session_id}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def forget(settings: Settings, session_id: str) -> None:
    """Delete the record of a session the server no longer keeps (``keep_finished_sessions``)."""
    with contextlib.suppress(OSError):
        (records_dir(settings) / f"{session_id}.json").unlink()


@dataclass
class FinishedSession:
    """A session that ended before this server started: what the routes need of a finished
    ``Session``, read from its record."""

    id: str
    owner: str | None
    state: SessionState
    ended_at: float
    plan: SessionPlan
    stored: SessionInfo
    previews: dict[int, bytes] = field(default_factory=dict)
    connected: bool = False
    #: Nothing streams to it: its websocket is refused as a session this server does not have.
    restored: bool = True

    def info(self) -> SessionInfo:
        return self.stored

    def watched(self) -> None:
        """Nothing to refresh: it ended."""

    async def finish(self) -> None:
        """DELETE of a finished session: nothing left to do."""


def load(settings: Settings) -> list[FinishedSession]:
    """The newest ``keep_finished_sessions`` records that read and plan, oldest first; the records
    of older ones are deleted, and a record that does not read is left alone with a warning."""
    directory = records_dir(settings)
    if not directory.is_dir():
        return []
    restored = []
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith(".tmp-"):
            with contextlib.suppress(OSError):
                path.unlink()  # a write a crash interrupted
            continue
        try:
            restored.append(_read(path, settings))
        except (OSError, ValueError, KeyError, TypeError, ValidationError, ApiError) as exc:
            log.warning("not restoring the finished session of %s: %s", path.name, exc)
    restored.sort(key=lambda finished: finished.ended_at)
    keep = settings.keep_finished_sessions
    for finished in restored[: max(0, len(restored) - keep)]:
        forget(settings, finished.id)
    return restored[max(0, len(restored) - keep) :]


def _read(path: Path, settings: Settings) -> FinishedSession:
    record = json.loads(path.read_text())
    if record.get("version") != VERSION:
        raise ValueError(f"record version {record.get('version')!r}, this server reads {VERSION}")
    info = SessionInfo.model_validate(record["info"])
    state = SessionState(info.state)
    if not state.done:
        raise ValueError(f"a record of a session in state {state.value!r}")
    kept = record["config"]
    plan = SessionPlan() if kept is None else make_plan(SessionConfig.model_validate(kept), settings)
    return FinishedSession(record["id"], record["owner"], state, float(record["ended_at"]), plan, info)
