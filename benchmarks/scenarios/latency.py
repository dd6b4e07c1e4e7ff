"""3. Latency: chunk sent -> its packet written, 720p30, tune=zerolatency, paced in real time.

One 1-frame chunk every 1/30 s (on the wall clock, as a camera or a model producing frames
live would send them) to a ``udp://`` output (real-time pacing is on, as for every network
URL), received by a UDP socket in this process. libx264 preset=ultrafast tune=zerolatency: one
packet out per frame in, no lookahead.

Two numbers per frame:
- ACK latency (the figure held to the target): from the moment the SDK hands the chunk's message
  to the socket to the moment the ACK covering it arrives on the SDK's reader thread, hooked into
  the writer (see ``measure.AckClock``). The server sends that ACK once the frame has left the
  pacer, been encoded and its packet muxed, i.e. written to the UDP socket.
- write + flush: what the caller sees, ``write_video_chunk`` then ``flush()`` (which returns when
  the ACK is in); it adds waking the caller's thread.

The main run uses the SDK's defaults, which on one machine put payloads into the session's shared
memory; one more run (shorter) sends them over the websocket, as from another machine.

The first frames warm up (x264's first frame, the pacer's anchor) and are left out. Side by side:
- the floor: the same frames, settings and cadence encoded by PyAV in this process, from having
  the frame to its packet muxed (into the null muxer);
- a breakdown, each run like the main one but shorter: transport alone (``Discard(encode=False)``,
  not paced: the ACK comes as soon as the encoder process has the chunk), and encoding without
  pacing (``Discard(encode=True)``, ``realtime=False``). Main minus the latter is what pacing costs;
  the latter minus transport is building the frame, encoding and muxing in the encoder process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import framecast

from ..baselines import pyav_realtime_latency
from ..measure import AckClock, percentile, sleep_until
from ..media import moving_frames
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from ..udp import UdpReceiver
from .common import ULTRAFAST_ZEROLATENCY, stream_counters, video_writer

NAME = "latency"
TITLE = "Latency: chunk sent -> packet written, real time, zerolatency"

DISTINCT_FRAMES = 60


def _paced(
    server: BenchServer,
    dst: Any,
    frames: Any,
    rate: int,
    count: int,
    realtime: bool,
    encoder: str | None = "libx264",
    shared_memory: bool | None = None,
) -> tuple[list[float], list[float], dict]:
    """Write ``count`` 1-frame chunks, one every 1/rate s, each followed by flush().

    Returns (ACK latencies, write+flush times) in ms, per frame, and the final summary.
    """
    size = (frames.shape[3], frames.shape[2])
    options = ULTRAFAST_ZEROLATENCY if encoder else None
    writer = video_writer(
        dst, server.url, size, rate, options, realtime=realtime, encoder=encoder, shared_memory=shared_memory
    )
    clock = AckClock.attach(writer)
    writer.open()
    round_trip = []
    start = time.perf_counter()
    for i in range(count):
        sleep_until(start + i / rate)
        t0 = time.perf_counter()
        k = i % len(frames)
        writer.write_video_chunk(0, frames[k : k + 1])
        writer.flush()
        round_trip.append((time.perf_counter() - t0) * 1000)
    writer.close()
    counters = stream_counters(writer.summary)
    if counters.get("frames") != count:
        raise RuntimeError(f"server took {counters.get('frames')} of {count} frames")
    return clock.latencies_ms(), round_trip, writer.summary or {}


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.latency_size
    rate = settings.frame_rate
    count = int(settings.latency_seconds * rate)
    short = max(count // 2, settings.latency_warmup_frames + 10)
    skip = settings.latency_warmup_frames
    tchw = moving_frames(DISTINCT_FRAMES, height, width, "tchw")
    thwc = moving_frames(DISTINCT_FRAMES, height, width, "thwc")

    with BenchServer() as server:
        with UdpReceiver() as receiver:
            acks, round_trip, summary = _paced(server, receiver.url, tchw, rate, count, realtime=True)
        if receiver.bytes == 0:
            raise RuntimeError("the UDP receiver got nothing")
        with UdpReceiver() as other:
            websocket, _, _ = _paced(server, other.url, tchw, rate, short, realtime=True, shared_memory=False)
        transport, _, _ = _paced(server, framecast.Discard(encode=False), tchw, rate, short, False, None)
        unpaced, _, _ = _paced(server, framecast.Discard(encode=True), tchw, rate, short, realtime=False)
    floor = pyav_realtime_latency(thwc, rate, ULTRAFAST_ZEROLATENCY, count)[skip:]
    acks, round_trip, transport, unpaced = acks[skip:], round_trip[skip:], transport[skip:], unpaced[skip:]
    websocket = websocket[skip:]
    pacing = summary.get("pacing") or {}

    result.add("p50", "ACK latency p50", percentile(acks, 50), "ms", 1)
    result.add("p99", "ACK latency p99", percentile(acks, 99), "ms", 1)
    result.add("ws_p50", "ACK latency p50, payloads over the websocket", percentile(websocket, 50), "ms", 1)
    result.add("ws_p99", "ACK latency p99, payloads over the websocket", percentile(websocket, 99), "ms", 1)
    result.add("rt_p50", "write+flush p50", percentile(round_trip, 50), "ms", 1)
    result.add("rt_p99", "write+flush p99", percentile(round_trip, 99), "ms", 1)
    result.add("floor_p50", "PyAV in-process encode+mux p50", percentile(floor, 50), "ms", 1)
    result.add("floor_p99", "PyAV in-process encode+mux p99", percentile(floor, 99), "ms", 1)
    result.add("transport_p50", "breakdown: transport alone p50", percentile(transport, 50), "ms", 1)
    result.add("unpaced_p50", "breakdown: + encode, no pacing p50", percentile(unpaced, 50), "ms", 1)
    result.add("unpaced_p99", "breakdown: + encode, no pacing p99", percentile(unpaced, 99), "ms", 1)
    result.add(
        "max_lateness", "server pacing max_lateness_ms", float(pacing.get("max_lateness_ms", float("nan"))), "ms", 1
    )
    result.target("p50 <= 15 ms", "p50", "<=", 15, "ms")
    result.target("p99 <= 40 ms", "p99", "<=", 40, "ms")
    result.series = {
        "ack_ms": acks,
        "round_trip_ms": round_trip,
        "floor_ms": floor,
        "transport_ms": transport,
        "unpaced_ms": unpaced,
        "websocket_ms": websocket,
    }
    result.notes.append(
        f"{width}x{height} rgb24 at {rate} fps, {count} frames ({short} for each breakdown run; the first {skip} "
        f"left out), libx264 ultrafast/zerolatency to udp:// on loopback ({receiver.datagrams} datagrams received)."
    )
    return result
