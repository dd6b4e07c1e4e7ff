"""Sizes and durations of a run: the full suite (the numbers in BENCHMARKS.md) and ``--quick``.

The quick run exercises every code path of every scenario with tiny frames and short durations
(under a minute in all); its numbers only show that the suite works, not how fast framecast is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    quick: bool = False

    # 1. end to end: framecast vs PyAV in-process vs an ffmpeg pipe
    e2e_size: tuple[int, int] = (1280, 720)
    e2e_frames: int = 300
    e2e_rounds: int = 5  # one run moves by ~10% on this VM; the medians of five hold still enough for a ratio

    # 2. transport alone (Discard(encode=False))
    transport_size: tuple[int, int] = (1280, 720)
    transport_chunk_frames: tuple[int, ...] = (1, 8)
    transport_seconds: float = 4.0
    transport_rounds: int = 2

    # 3. latency, real time, zerolatency
    latency_size: tuple[int, int] = (1280, 720)
    latency_seconds: float = 20.0
    latency_warmup_frames: int = 30

    # 4. concurrency: real-time sessions at once
    concurrency_size: tuple[int, int] = (640, 360)
    concurrency_level_seconds: float = 10.0
    concurrency_max_sessions: int = 40
    concurrency_bound_frames: int = 300

    # 4b. fan-out: one encode to three outputs vs one output vs three sessions (real time)
    fanout_size: tuple[int, int] = (1280, 720)
    fanout_seconds: float = 20.0
    fanout_rounds: int = 3

    # 4c. a shaped link: raw video through 1 Gbit/s in real time, RGB against yuv420p on the wire
    shaped_size: tuple[int, int] = (1920, 1080)
    shaped_seconds: float = 60.0
    shaped_link_bits: float = 1e9

    # 4d. compressed payloads: by kind of picture, and through the shaped link
    compression_size: tuple[int, int] = (1280, 720)
    compression_frames: int = 60
    compression_link_size: tuple[int, int] = (1920, 1080)
    compression_link_rate: int = 60
    compression_link_seconds: float = 20.0

    # 5. memory over a long stream, and per extra session
    memory_size: tuple[int, int] = (640, 360)
    memory_seconds: float = 600.0
    memory_interval: float = 2.0
    memory_extra_sessions: int = 6
    memory_settle_seconds: float = 4.0

    # 6. pacing drift
    drift_size: tuple[int, int] = (640, 360)
    drift_seconds: float = 60.0

    # shared
    frame_rate: int = 30
    sample_rate: int = 48000


FULL = Settings()

QUICK = replace(
    FULL,
    quick=True,
    e2e_size=(320, 180),
    e2e_frames=30,
    e2e_rounds=1,
    transport_size=(320, 180),
    transport_seconds=0.7,
    transport_rounds=1,
    latency_size=(320, 180),
    latency_seconds=2.0,
    latency_warmup_frames=5,
    concurrency_size=(160, 96),
    concurrency_level_seconds=1.5,
    concurrency_max_sessions=2,
    concurrency_bound_frames=30,
    fanout_size=(320, 180),
    fanout_seconds=2.0,
    fanout_rounds=1,
    shaped_size=(320, 180),
    shaped_seconds=3.0,
    shaped_link_bits=1e9 * (320 * 180) / (1920 * 1080),  # the same squeeze on RGB as at 1080p
    compression_size=(320, 180),
    compression_frames=6,
    compression_link_size=(320, 180),
    compression_link_rate=30,
    compression_link_seconds=2.0,
    memory_size=(160, 96),
    memory_seconds=8.0,
    memory_interval=0.5,
    memory_extra_sessions=2,
    memory_settle_seconds=1.0,
    drift_size=(160, 96),
    drift_seconds=4.0,
)
