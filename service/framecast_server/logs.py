"""Logging: readable lines by default, JSON lines with FRAMECAST_LOG_FORMAT=json.

Records about a session carry ``session_id`` (and ``stream`` where there is one) as fields, so
JSON logs can be filtered per session and text logs show them in brackets. In a fleet every record
carries ``replica`` (FRAMECAST_REPLICA_ID) too. Uvicorn's own loggers go through the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: Record attributes copied into log lines when present.
CONTEXT_FIELDS = ("replica", "session_id", "stream")


class TextFormatter(logging.Formatter):
    """``2026-11-22 06:30:01,123 INFO framecast_server.session.session [session=ab12 stream=0]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{key.split('_')[0]}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        )
        record.context = f" [{context}]" if context else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ReplicaField(logging.Filter):
    """Stamps every record with the replica's id."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def filter(self, record: logging.LogRecord) -> bool:
        record.replica = self.replica
        return True


def configure(level: str, fmt: str, replica: str | None = None) -> None:
    """Send every log record (framecast's and uvicorn's) to stderr in the chosen format, each
    with ``replica`` when the server is one of a fleet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if replica is not None:
        handler.addFilter(ReplicaField(replica))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the session id; ``stream=`` adds the stream index."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        if "stream" in kwargs:
            extra["stream"] = kwargs.pop("stream")
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs
