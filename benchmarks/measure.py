"""Clocks and counters: percentiles, CPU accounting, and when each chunk was sent and acknowledged.

``AckClock`` is how latency is measured. A framecast writer runs its ``event_hooks``: ``"send"``
just before a CHUNK message's bytes go to the socket, ``"ack"`` when an ACK arrives, on the thread
that receives it, each with a ``time.perf_counter()`` reading. AckClock hooks into one writer: per
sequence number it keeps the send time and the arrival of the first ACK that covers it (ACKs are
cumulative). A server ACK means the chunk's frames were encoded and their packets muxed (for
real-time sessions: once its last frame has left at media time), so ``ack - send`` is "chunk
sent -> its packets written", as seen by the client, including both network directions, the
server's event loop and the encoder process.
"""

from __future__ import annotations

import math
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import psutil

from framecast.base import BaseStreamWriter


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``, linear interpolation; NaN when empty."""
    data = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(data, q)) if data.size else math.nan


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def sleep_until(deadline: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``deadline`` (returns at once if it has)."""
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def processes_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of all of ``pids`` so far (those gone count 0)."""
    return sum(process_cpu_seconds(pid) for pid in pids)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all CPUs, all processes) has been busy so far: /proc/stat."""
    times = psutil.cpu_times()
    return sum(times) - times.idle


def busy_cores_sample(seconds: float) -> float:
    """Cores the whole machine kept busy over the next ``seconds`` (all processes)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


class BackgroundLoad:
    """CPU used by processes outside this process tree, from construction to ``cores()``.

    The machine's busy time (all CPUs, /proc/stat) minus what this process and its descendants
    (the servers a scenario starts, their forkservers and encoder processes) used. Descendants are
    sampled every 0.2 s (a process's last moments before it exits are missed, so this errs a
    little high). Another test run or build on the same machine shows up here; the numbers of a
    scenario with a high value are suspect.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self._t0 = time.perf_counter()
        self._machine0 = machine_busy_seconds()
        self._me = psutil.Process()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._interval = interval
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)
        self._thread.start()

    def _sample(self, initial: bool = False) -> None:
        try:
            tree = [self._me, *self._me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            used = t.user + t.system
            # a process already running at the start counts from there; a new one from its birth
            self._first.setdefault(p.pid, used if initial else 0.0)
            self._last[p.pid] = max(self._last.get(p.pid, 0.0), used)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def cores(self) -> float:
        self._stop.set()
        self._thread.join(2)
        self._sample()
        elapsed = time.perf_counter() - self._t0
        ours = sum(self._last[pid] - self._first[pid] for pid in self._last)
        return max(0.0, (machine_busy_seconds() - self._machine0) - ours) / max(elapsed, 1e-9)


class SteadyWindow:
    """CPU used between ``begin`` and ``end`` seconds after construction, sampled on a thread: the
    whole machine's busy time, and per role the CPU of given processes (e.g. {"server": [pid],
    "encoders": [...]}, resolved when the window opens). Leaves out opening and closing, so that
    what a level costs while it streams can be compared with another's."""

    def __init__(self, begin: float, end: float, roles: Callable[[], dict[str, list[int]]] | None = None) -> None:
        self._begin, self._end = begin, end
        self._roles = roles
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        self.busy = math.nan
        self.role_cores: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="steady-window", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sleep_until(self._t0 + self._begin)
        roles = self._roles() if self._roles is not None else {}
        machine, start = machine_busy_seconds(), time.perf_counter()
        first = {role: processes_cpu_seconds(pids) for role, pids in roles.items()}
        sleep_until(self._t0 + self._end)
        self.seconds = time.perf_counter() - start
        self.role_cores = {
            role: (processes_cpu_seconds(pids) - first[role]) / self.seconds for role, pids in roles.items()
        }
        self.busy = (machine_busy_seconds() - machine) / self.seconds

    def result(self, timeout: float) -> tuple[float, dict[str, float]]:
        """(machine busy cores, {role: cores}) over the window; waits for it to end."""
        self._thread.join(timeout)
        return self.busy, self.role_cores


@dataclass
class AckClock:
    """Send and ACK times of every chunk message one writer sends (see the module docstring).

    Attributes:
        sent: seq -> perf_counter() when the message was handed to the socket.
        acked: seq -> perf_counter() when the first ACK covering it arrived.
        streams: seq -> stream index of the message.
        media_end: seq -> media seconds of its stream written up to the end of this message.
    """

    sent: dict[int, float] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)
    streams: dict[int, int] = field(default_factory=dict)
    media_end: dict[int, float] = field(default_factory=dict)
    _stream_seconds: dict[int, float] = field(default_factory=dict)
    _next_unacked: int = 0

    @classmethod
    def attach(cls, writer: BaseStreamWriter) -> AckClock:
        """Hook a new clock into ``writer`` (a framecast writer, before or after open())."""
        clock = cls()
        writer.event_hooks["send"].append(clock._on_send)
        writer.event_hooks["ack"].append(clock._on_ack)
        return clock

    def _on_send(self, seq: int, stream: int, seconds: float, now: float) -> None:
        self._stream_seconds[stream] = self._stream_seconds.get(stream, 0.0) + seconds
        self.streams[seq] = stream
        self.media_end[seq] = self._stream_seconds[stream]
        self.sent[seq] = now

    def _on_ack(self, seq: int, now: float) -> None:
        while self._next_unacked <= seq:
            if self._next_unacked in self.sent:
                self.acked.setdefault(self._next_unacked, now)
            self._next_unacked += 1

    def latencies_ms(self, skip: int = 0) -> list[float]:
        """ACK time minus send time of every acknowledged message, in seq order, after ``skip``."""
        seqs = sorted(s for s in self.acked if s >= skip)
        return [(self.acked[s] - self.sent[s]) * 1000 for s in seqs]
