"""How a session answers, logs and finally stops a client that keeps sending what it refuses.

Every refused chunk or control message used to get its own error reply and its own log line, so
a client sending garbage as fast as it could (and never reading) made the server queue replies
and write log lines without limit: 13 MiB of bad chunks made a 53 MB log. Here, per session:

- replies: at most ``replies_per_second`` error replies each second; refusals past that are counted
  and answered together by one ``error`` (code ``refused_more``) saying how many, sent with the next
  reply or the next accepted message;
- log lines: the first ``LOG_FIRST`` refusals are logged one by one, then at most one summary line
  every ``LOG_EVERY`` seconds (and one when the client goes);
- patience: more than ``max_in_a_row`` refusals, or more than ``max_bytes_in_a_row`` refused bytes,
  with nothing accepted in between, and the connection is closed with 1008 (policy violation)
  and a reason saying so. The session itself goes on: a client may reconnect and send what is
  right (an SDK reconnecting sends its unacknowledged chunks, which resets the count).

Nothing here does I/O: the ingest loop asks and acts (``ingest.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Refusals logged one by one, before the log only gets summaries.
LOG_FIRST = 5
#: Seconds between two summary log lines.
LOG_EVERY = 10.0
#: Characters of a refusal's reason quoted in a reply or a log line.
MAX_REASON_CHARS = 300


def shorten(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (never echo a client at length)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class Verdict:
    """What to do about one refusal.

    Attributes:
        reply: send this refusal's own error reply.
        summary: first send a ``refused_more`` error with this message (refusals not answered one by one).
        close_reason: close the connection with 1008 and this reason (at most 123 bytes).
    """

    reply: bool
    summary: str | None = None
    close_reason: str | None = None


class Refusals:
    """The refusals of one session's clients, counted for replies, logs and patience.

    Args:
        replies_per_second: error replies sent each second at most.
        max_in_a_row: refusals with nothing accepted in between before the connection is closed.
        max_bytes_in_a_row: refused bytes with nothing accepted in between before it is closed.
        log: called as ``log(level_name, format, *args)`` for each line to write.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        replies_per_second: int,
        max_in_a_row: int,
        max_bytes_in_a_row: int,
        log: Callable[..., Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replies_per_second = replies_per_second
        self.max_in_a_row = max_in_a_row
        self.max_bytes_in_a_row = max_bytes_in_a_row
        self._log = log
        self._clock = clock
        #: Refusals over the session's life.
        self.total = 0
        self.in_a_row = 0
        self.bytes_in_a_row = 0
        self._window_start = float("-inf")
        self._replies_in_window = 0
        self._unanswered = 0
        self._unlogged = 0
        self._last_summary_log = clock()
        self._last_reason = ""

    def refused(self, what: str, size: int, reason: str, **log_fields: Any) -> Verdict:
        """One message (``what``: "chunk", "control message") of ``size`` bytes was refused for
        ``reason``: whether to reply, to summarize, to close."""
        now = self._clock()
        self.total += 1
        self.in_a_row += 1
        self.bytes_in_a_row += size
        self._log_refusal(now, what, reason, log_fields)
        summary = None
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._replies_in_window = 0
            summary = self._take_summary()
        reply = self._replies_in_window < self.replies_per_second
        if reply:
            self._replies_in_window += 1
        else:
            self._unanswered += 1
        close_reason = None
        if self.in_a_row > self.max_in_a_row:
            close_reason = f"{self.in_a_row} messages in a row refused, nothing valid in between"
        elif self.bytes_in_a_row > self.max_bytes_in_a_row:
            close_reason = f"{self.bytes_in_a_row} bytes in a row refused, nothing valid in between"
        if close_reason is not None:
            self._log(
                "warning",
                "closing the connection: %s (limits: %d messages, %d bytes)",
                close_reason,
                self.max_in_a_row,
                self.max_bytes_in_a_row,
            )
        return Verdict(reply, summary, close_reason)

    def accepted(self) -> str | None:
        """A message was taken: the client is not only sending garbage. Returns a summary to send,
        if refusals went unanswered."""
        self.in_a_row = 0
        self.bytes_in_a_row = 0
        return self._take_summary()

    def gone(self) -> None:
        """The client disconnected: log what was refused and not yet logged."""
        if self._unlogged:
            self._log_summary(self._clock())

    def _take_summary(self) -> str | None:
        if not self._unanswered:
            return None
        count, self._unanswered = self._unanswered, 0
        return (
            f"and {count} more messages refused, not answered one by one (at most "
            f"{self.replies_per_second} error replies a second)"
        )

    def _log_refusal(self, now: float, what: str, reason: str, fields: dict[str, Any]) -> None:
        if self.total <= LOG_FIRST:
            self._log("info", "refused a %s: %s", what, shorten(reason), **fields)
            if self.total == LOG_FIRST:
                self._log("info", "further refusals are logged as a summary every %g s", LOG_EVERY)
            return
        self._unlogged += 1
        self._last_reason = reason
        if now - self._last_summary_log >= LOG_EVERY:
            self._log_summary(now)

    def _log_summary(self, now: float) -> None:
        self._log(
            "info",
            "refused %d more messages in the last %.0f s (%d in all); the last: %s",
            self._unlogged,
            now - self._last_summary_log,
            self.total,
            shorten(self._last_reason),
        )
        self._unlogged = 0
        self._last_summary_log = now
