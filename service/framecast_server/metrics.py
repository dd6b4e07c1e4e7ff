"""Prometheus metrics at /metrics (prometheus-client), one registry per app.

Counters count what flowed (chunks, bytes and frames in; packets and bytes out; drops,
reconnects, errors by kind); request latencies are a histogram per route; gauges about the current
sessions (by state, queue depth, encode rate) are read from the session manager at scrape time,
as a ``Gauges`` record it makes (``GaugeSource``): this module imports nothing of sessions.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_C = TypeVar("_C", bound=Collector)


class Metrics:
    """Every metric of one server. Injected into the session manager and the app.

    Two registries share the same counters: ``registry`` for admin keys (and keyless servers) adds
    the per-session gauges, labelled with session ids; ``tenant_registry``, for every other key,
    has only aggregates, so that no tenant learns another's session ids. A replica of a fleet
    (``replica``) labels every series with ``replica``.
    """

    def __init__(self, replica: str | None = None) -> None:
        self.replica = replica
        self.registry = CollectorRegistry()
        self.tenant_registry = CollectorRegistry()
        self.chunks_in = self._shared(
            Counter("framecast_chunks_in", "Chunks taken into sessions", ["media"], registry=None)
        )
        self.bytes_in = self._shared(
            Counter("framecast_bytes_in", "Chunk payload bytes taken", ["media"], registry=None)
        )
        self.frames_in = self._shared(
            Counter("framecast_frames_in", "Video frames or audio samples taken", ["media"], registry=None)
        )
        self.payload_paths = self._shared(
            Counter(
                "framecast_chunk_payloads",
                "How chunk payloads reached the encoder: placed (received straight into its shared memory), "
                "copied (into it after arriving), client_memory (the client's shared memory)",
                ["path"],
                registry=None,
            )
        )
        self.packets_out = self._shared(
            Counter("framecast_packets_out", "Encoded packets written", ["media"], registry=None)
        )
        self.bytes_out = self._shared(Counter("framecast_bytes_out", "Encoded bytes written", ["media"], registry=None))
        self.dropped = self._shared(
            Counter("framecast_dropped_frames", "Frames dropped during destination outages", ["media"], registry=None)
        )
        self.reconnects = self._shared(
            Counter("framecast_destination_reconnects", "Attempts to reconnect a destination", registry=None)
        )
        self.errors = self._shared(Counter("framecast_errors", "Errors by kind", ["kind"], registry=None))
        self.requests = self._shared(
            Histogram(
                "framecast_http_request_duration_seconds",
                "HTTP request latency",
                ["method", "route", "status"],
                registry=None,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            )
        )

    def _shared(self, collector: _C) -> _C:
        for registry in (self.registry, self.tenant_registry):
            registry.register(collector)
        return collector

    def exposition(self, admin: bool) -> bytes:
        """The Prometheus text for an admin key (per-session series too) or a tenant's."""
        registry: Collector = self.registry if admin else self.tenant_registry
        if self.replica is not None:
            registry = _Labelled(registry, "replica", self.replica)
        return generate_latest(registry)

    def watch(self, source: GaugeSource) -> None:
        """Report gauges about ``source``'s sessions (the session manager's) at every scrape."""
        self.registry.register(_SessionGauges(source, per_session=True))
        self.tenant_registry.register(_SessionGauges(source, per_session=False))


class _Labelled:
    """A registry's metrics with one more label on every sample (a replica's id)."""

    def __init__(self, inner: Collector, name: str, value: str) -> None:
        self.inner = inner
        self.name = name
        self.value = value

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [s._replace(labels={self.name: self.value, **s.labels}) for s in family.samples]
            yield labelled


@dataclass(frozen=True)
class OpenOutput:
    """What the per-session gauges show of one destination of an open session."""

    index: int
    state: str
    bytes: int
    dropped: int
    reconnects: int


@dataclass(frozen=True)
class OpenSession:
    """What the per-session gauges show of one open session."""

    id: str
    queued_chunks: int
    outbox_bytes: int
    encode_rates: list[float]
    outputs: list[OpenOutput]


@dataclass(frozen=True)
class Gauges:
    """The sessions' state at one scrape: how many are in each state, and the open ones."""

    by_state: dict[str, int]
    open: list[OpenSession]
    output_dir_bytes: int | None = None  # the files under the output directory
    output_dir_free_bytes: int | None = None  # left on its filesystem


class GaugeSource(Protocol):
    """What the gauges are read from (the session manager); metrics know nothing else of sessions."""

    def gauges(self) -> Gauges: ...


class _SessionGauges:
    """Read at scrape time: sessions by state, and (``per_session``) per open session its queue and
    encode rate."""

    def __init__(self, source: GaugeSource, per_session: bool) -> None:
        self.source = source
        self.per_session = per_session

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauges = self.source.gauges()
        by_state = GaugeMetricFamily("framecast_sessions", "Sessions by state", labels=["state"])
        for state, count in gauges.by_state.items():
            by_state.add_metric([state], count)
        yield by_state
        outputs = GaugeMetricFamily(
            "framecast_outputs",
            "Destinations of open sessions by state (one session may have several)",
            labels=["state"],
        )
        for state, count in collections.Counter(o.state for s in gauges.open for o in s.outputs).items():
            outputs.add_metric([state], count)
        yield outputs
        if not self.per_session:
            return
        if gauges.output_dir_bytes is not None:
            yield GaugeMetricFamily(
                "framecast_output_dir_bytes",
                "Bytes of the files under the output directory",
                value=gauges.output_dir_bytes,
            )
        if gauges.output_dir_free_bytes is not None:
            yield GaugeMetricFamily(
                "framecast_output_dir_free_bytes",
                "Bytes left on the output directory's filesystem",
                value=gauges.output_dir_free_bytes,
            )
        queue = GaugeMetricFamily(
            "framecast_session_queue_chunks",
            "Chunks handed to a session's encoder and not yet encoded",
            labels=["session"],
        )
        outbox = GaugeMetricFamily(
            "framecast_session_outbox_bytes", "Bytes waiting for a session's client", labels=["session"]
        )
        fps = GaugeMetricFamily(
            "framecast_session_encode_rate",
            "Frames (video) or samples (audio) encoded per second",
            labels=["session", "stream"],
        )
        per_output = {
            name: GaugeMetricFamily(f"framecast_session_output_{name}", help_text, labels=["session", "output"])
            for name, help_text in (
                ("bytes", "Bytes a destination of a session has muxed"),
                ("dropped", "Packets a destination dropped during its outages"),
                ("reconnects", "Attempts to reconnect a destination of a session"),
            )
        }
        for session in gauges.open:
            queue.add_metric([session.id], session.queued_chunks)
            outbox.add_metric([session.id], session.outbox_bytes)
            for index, rate in enumerate(session.encode_rates):
                fps.add_metric([session.id, str(index)], rate)
            for output in session.outputs:
                labels = [session.id, str(output.index)]
                per_output["bytes"].add_metric(labels, output.bytes)
                per_output["dropped"].add_metric(labels, output.dropped)
                per_output["reconnects"].add_metric(labels, output.reconnects)
        yield queue
        yield outbox
        yield fps
        yield from per_output.values()


class RateMeter:
    """Units per second from a growing total, smoothed over about ``window`` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.rate = 0.0
        self._last: tuple[float, float] | None = None

    def update(self, total: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            elapsed = now - self._last[1]
            if elapsed > 0:
                instant = (total - self._last[0]) / elapsed
                weight = min(1.0, elapsed / self.window)
                self.rate += weight * (instant - self.rate)
        self._last = (total, now)


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The route template of a request (``/v1/sessions/{session_id}``), not its raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
