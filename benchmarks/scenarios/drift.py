"""6. Pacing drift: a 60 s real-time stream, video 640x360@30 + audio 48 kHz, to a UDP receiver.

The client writes one video frame and 1/30 s of audio in turn as fast as the SDK lets it (its flow
control holds a real-time writer about a second ahead of the wall clock), to ``udp://`` on
loopback, which gets framecast's live defaults (libx264 veryfast zerolatency, AAC, MPEG-TS) and
real-time pacing. A UDP socket in this process receives the stream.

Drift is read two ways:
- the server's own account, ``pacing.max_lateness_ms`` in the session summary (how late the
  latest frame left relative to the pacer's schedule) and ``pacing.media_seconds``;
- from the client: a video chunk is acknowledged when its last frame has left, so for every video
  chunk ``drift = (ACK time - first ACK time) - (its last frame's media time - the first's)``:
  wall seconds elapsed minus media seconds released. Its largest magnitude over the run is held to
  the target; the value at the end is "media seconds vs wall seconds". ACK delivery jitter (a few
  ms through the server's event loop and the websocket) is included, so this is an upper bound.
"""

from __future__ import annotations

from pathlib import Path

import framecast

from ..measure import AckClock
from ..media import moving_frames, tone
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from ..udp import UdpReceiver

NAME = "drift"
TITLE = "Pacing drift: real-time video + audio to UDP"

#: Media written per call, per stream: one video frame (and as much audio), as a live generator
#: produces them; every video chunk's ACK then marks one frame leaving.
STEP_FRAMES = 1


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.drift_size
    rate, sample_rate = settings.frame_rate, settings.sample_rate
    frames = moving_frames(2 * rate, height, width, "tchw")
    step_frames = STEP_FRAMES
    audio = tone(STEP_FRAMES / rate, sample_rate)
    steps = int(round(settings.drift_seconds * rate / STEP_FRAMES))

    with BenchServer() as server, UdpReceiver() as receiver:
        writer = framecast.StreamWriter(receiver.url, server=server.url)  # udp: real time by default
        writer.add_video_stream(frame_rate=rate, width=width, height=height, format="rgb24")
        writer.add_audio_stream(sample_rate=sample_rate, num_channels=2)
        clock = AckClock.attach(writer)
        with writer.open():
            for i in range(steps):
                k = (i * step_frames) % (len(frames) - step_frames + 1)
                writer.write_video_chunk(0, frames[k : k + step_frames])
                writer.write_audio_chunk(1, audio)
        summary = writer.summary or {}
    pacing = summary.get("pacing") or {}
    video = sorted(s for s in clock.acked if clock.streams[s] == 0)
    if len(video) < 2 or receiver.bytes == 0:
        raise RuntimeError(f"{len(video)} video chunks acknowledged, UDP receiver got {receiver.bytes} bytes")

    def last_frame_time(seq: int) -> float:
        return clock.media_end[seq] - 1 / rate

    first = video[0]
    wall = [clock.acked[s] - clock.acked[first] for s in video]
    media = [last_frame_time(s) - last_frame_time(first) for s in video]
    drift_ms = [(w - m) * 1000 for w, m in zip(wall, media)]
    worst = max(drift_ms, key=abs)

    result.add(
        "max_lateness", "server pacing max_lateness_ms", float(pacing.get("max_lateness_ms", float("nan"))), "ms", 1
    )
    result.add("media_seconds", "server pacing media_seconds", float(pacing.get("media_seconds", float("nan"))), "s", 2)
    result.add("wall_span", "wall seconds, first to last video ACK", wall[-1], "s", 3)
    result.add("media_span", "media seconds, first to last video ACK", media[-1], "s", 3)
    result.add("drift_end", "drift at the end (wall - media)", drift_ms[-1], "ms", 1)
    result.add("drift_max", "largest |drift| during the run", abs(worst), "ms", 1)
    result.target("drift < 50 ms over the run", "drift_max", "<", 50, "ms")
    result.target("server max_lateness < 50 ms", "max_lateness", "<", 50, "ms")
    result.series = {"t": media, "drift_ms": drift_ms}
    result.notes.append(
        f"{settings.drift_seconds:g} s of {width}x{height}@{rate} + {sample_rate} Hz stereo to udp:// (live defaults); "
        f"{len(video)} video chunks acknowledged; UDP receiver got {receiver.datagrams} datagrams, "
        f"{receiver.bytes / 1e6:.1f} MB."
    )
    return result
