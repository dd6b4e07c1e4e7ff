"""What the server knows of each destination of a session: its state, counters and events.

Each output moves through its own states, apart from the session's::

    CONNECTING ──> STREAMING <──> RECONNECTING
        │              │               │
        └──────────────┴───────────────┴──> CLOSED (the session closed) or FAILED (this output)

A network output starts CONNECTING (its encoder connects once the session is open); the others
start STREAMING. An output that fails for good is FAILED with FFmpeg's reason while the others carry
on; the session fails only when a ``required`` output fails, or the last one does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from framecast_server.messages import OutputStats
from framecast_server.models import OutputCounters, OutputInfo, SegmentInfo
from framecast_server.planning.plan import OutputPlan, StreamPlan
from framecast_server.planning.segmenting import read_segment_list

#: Events kept per output.
MAX_EVENTS = 50


class OutputState(str, enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass
class OutputStatus:
    """One destination of a session, as the server sees it."""

    plan: OutputPlan
    state: OutputState
    error: str | None = None
    counters: OutputCounters = field(default_factory=OutputCounters)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, plan: OutputPlan) -> OutputStatus:
        return cls(plan, OutputState.CONNECTING if plan.live else OutputState.STREAMING)

    @property
    def done(self) -> bool:
        return self.state in (OutputState.CLOSED, OutputState.FAILED)

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[:-MAX_EVENTS]

    def take(self, stats: OutputStats) -> None:
        """The encoder's totals for this output (they only grow)."""
        counters = self.counters
        counters.packets, counters.bytes = stats.packets, stats.bytes
        counters.dropped = max(counters.dropped, stats.dropped)
        counters.reconnects = max(counters.reconnects, stats.reconnects)

    def info(self, session_streams: list[StreamPlan], files_url: str = "") -> OutputInfo:
        """What session info shows of this output; ``files_url`` prefixes a rotating recording's
        file names (``/v1/sessions/{id}/files/``)."""
        segments = self.plan.segments
        listed = None
        if segments is not None and segments.rotating:
            listed = [
                SegmentInfo(name=name, start=round(start, 3), duration=round(duration, 3), url=files_url + name)
                for name, start, duration in read_segment_list(segments)
            ]
        return OutputInfo(
            index=self.plan.index,
            destination=self.plan.describe_destination(),
            format=self.plan.muxer,
            required=self.plan.required,
            encoders=[stream.encoder for stream in self.plan.encoders(session_streams)],
            state=self.state.value,
            error=self.error,
            counters=self.counters.model_copy(),
            events=list(self.events),
            segments=listed,
        )
