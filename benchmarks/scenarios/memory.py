"""5. Memory: the server's RSS across a long real-time stream, and what each extra session costs.

Memory is summed over the server's whole process tree (its main process, the forkserver, one
encoder process per session): RSS as asked, and PSS, which splits the pages forked encoders share
with the forkserver (PyAV's code, mostly) so that its sum is what the tree really occupies.

1. One session streams in real time for ``--memory-seconds`` (default 600): 640x360@30 video
   (libx264, live settings) and 48 kHz stereo audio (AAC) into ``Discard(encode=True)``, the
   client writing one frame and 1/30 s of audio in turn as fast as the SDK takes them (its flow
   control holds a real-time writer about 1 s ahead of the wall clock).
   Memory is sampled every few seconds. Growth is judged after a warm-up (the first 10% of the
   run, at most 60 s: x264's buffers, the pacer's second of frames, allocator arenas filling up),
   as the least-squares trend of RSS over the rest, scaled to 10 minutes; the raw first-to-last
   difference is reported too.
2. Then sessions are added one at a time, each streaming the same way, and memory read once each
   has settled; the cost of a session is the slope of memory over the number of sessions.
3. Finally all are closed, and the server's main process is compared with before (what finished
   sessions leave behind).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

import framecast

from ..media import moving_frames, tone
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .common import LIVE

NAME = "memory"
TITLE = "Memory: server RSS over a long stream, and per extra session"

MB = 1e6
#: Memory does not depend on who else uses the CPU, and this scenario takes ten minutes: no retries.
RETRY_WHEN_BUSY = False


class Sampler:
    """Samples the server tree's memory on a thread every ``interval`` s: (t, rss, pss, uss, main_rss)."""

    def __init__(self, server: BenchServer, interval: float) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> tuple[float, int, int, int, int]:
        m = self.server.memory()
        row = (time.perf_counter() - self.t0, m.rss, m.pss, m.uss, m.main_rss)
        self.samples.append(row)
        return row

    def since(self, t: float) -> list[tuple[float, int, int, int, int]]:
        return [s for s in self.samples if s[0] >= t]

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Stream:
    """A real-time video + audio session on its own thread, until ``stop()``."""

    def __init__(self, server: BenchServer, frames, audio, settings: Settings) -> None:
        width, height = frames.shape[3], frames.shape[2]
        self.writer = framecast.StreamWriter(framecast.Discard(encode=True), server=server.url, realtime=True)
        self.writer.add_video_stream(
            frame_rate=settings.frame_rate,
            width=width,
            height=height,
            format="rgb24",
            encoder="libx264",
            encoder_option=LIVE,
        )
        self.writer.add_audio_stream(sample_rate=settings.sample_rate, num_channels=2, encoder="aac")
        self.writer.open()
        self.error: BaseException | None = None
        self._frames, self._audio, self._rate = frames, audio, settings.frame_rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # One frame and 1/30 s of audio in turn, as a live generator would produce them.
            samples = len(self._audio) // self._rate
            k = 0
            while not self._stop.is_set():
                self.writer.write_video_chunk(0, self._frames[k : k + 1])
                self.writer.write_audio_chunk(1, self._audio[:samples])
                k = (k + 1) % len(self._frames)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(30)
        self.writer.close()
        if self.error is not None:
            raise RuntimeError(f"memory stream failed: {self.error}") from self.error
        return self.writer.summary or {}


def _trend_per_10_min(samples: list[tuple[float, ...]], column: int) -> float:
    """Least-squares slope of ``column`` over time, in bytes per 600 s."""
    if len(samples) < 3:
        return float("nan")
    t = np.array([s[0] for s in samples])
    y = np.array([s[column] for s in samples], dtype=np.float64)
    return float(np.polyfit(t, y, 1)[0] * 600)


def _settled(sampler: Sampler, seconds: float) -> tuple[float, ...]:
    """Wait ``seconds``, then average three quick samples."""
    time.sleep(seconds)
    rows = [sampler.sample() for _ in range(3)]
    return tuple(float(np.mean([r[i] for r in rows])) for i in range(5))


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.memory_size
    frames = moving_frames(2 * settings.frame_rate, height, width, "tchw")
    audio = tone(1.0, settings.sample_rate)
    duration = settings.memory_seconds
    warmup = min(60.0, 0.1 * duration) if not settings.quick else 0.25 * duration

    with BenchServer() as server:
        sampler = Sampler(server, settings.memory_interval)
        idle = _settled(sampler, 1.0)
        stream = Stream(server, frames, audio, settings)
        t_start = sampler.now()
        time.sleep(duration)
        t_end = sampler.now()
        long_samples = sampler.since(t_start)
        summary = stream.stop()
        after_long = _settled(sampler, settings.memory_settle_seconds)

        extra = [after_long]
        streams = []
        try:
            for _ in range(settings.memory_extra_sessions):
                streams.append(Stream(server, frames, audio, settings))
                extra.append(_settled(sampler, settings.memory_settle_seconds))
        finally:
            for s in streams:
                s.stop()
        after_all = _settled(sampler, settings.memory_settle_seconds)
        sampler.stop()

    media = float(((summary.get("pacing") or {}).get("media_seconds")) or 0.0)
    if media < 0.5 * duration:
        raise RuntimeError(f"the long stream got only {media:.1f} s of media out in {duration:g} s")
    steady = [s for s in long_samples if s[0] >= t_start + warmup]
    growth_raw = long_samples[-1][1] - long_samples[0][1]
    sessions = np.arange(len(extra))
    per_session_rss = float(np.polyfit(sessions, [e[1] for e in extra], 1)[0]) if len(extra) > 1 else float("nan")
    per_session_pss = float(np.polyfit(sessions, [e[2] for e in extra], 1)[0]) if len(extra) > 1 else float("nan")

    result.add("rss_idle", "server tree RSS, idle", idle[1] / MB, "MB", 0)
    result.add("rss_streaming", "server tree RSS, 1 session streaming (end)", long_samples[-1][1] / MB, "MB", 0)
    result.add(
        "growth_trend",
        f"RSS trend after {warmup:.0f} s warm-up, per 10 min",
        _trend_per_10_min(steady, 1) / MB,
        "MB",
        1,
    )
    result.add("growth_pss_trend", "PSS trend after warm-up, per 10 min", _trend_per_10_min(steady, 2) / MB, "MB", 1)
    result.add("growth_raw", f"RSS growth, first to last sample ({t_end - t_start:.0f} s)", growth_raw / MB, "MB", 1)
    result.add("per_session_rss", "RSS per extra streaming session", per_session_rss / MB, "MB", 1)
    result.add("per_session_pss", "PSS per extra streaming session", per_session_pss / MB, "MB", 1)
    result.add(
        "main_leftover", "server main process RSS after all closed - idle", (after_all[4] - idle[4]) / MB, "MB", 1
    )
    result.target("RSS growth <= 5 MB over 10 minutes", "growth_trend", "<=", 5.0, "MB")
    result.series = {
        "long": [(s[0] - t_start, s[1], s[2]) for s in long_samples],
        "extra": [(i, e[1], e[2]) for i, e in enumerate(extra)],
        "warmup": warmup,
    }
    result.notes.append(
        f"{duration:g} s stream of {width}x{height}@{settings.frame_rate} (libx264 live settings) + "
        f"{settings.sample_rate} Hz stereo AAC, real time, to Discard(encode=True); {len(long_samples)} samples; "
        f"media out: {media:.1f} s; {settings.memory_extra_sessions} extra sessions."
    )
    return result
