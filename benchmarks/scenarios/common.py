"""Helpers shared by the scenarios: writers configured the same way everywhere."""

from __future__ import annotations

from typing import Any

import framecast

#: x264 settings of the end-to-end and latency scenarios.
ULTRAFAST = {"preset": "ultrafast"}
ULTRAFAST_ZEROLATENCY = {"preset": "ultrafast", "tune": "zerolatency"}
#: framecast's live defaults for network outputs (service/framecast_server/destinations.py), used for
#: the real-time sessions of the concurrency, memory and drift scenarios, spelled out so that
#: Discard outputs (which get no live defaults) encode exactly like a live stream.
LIVE = {"preset": "veryfast", "tune": "zerolatency", "g": "60", "bf": "0"}


def video_writer(
    dst: Any,
    server: str,
    size: tuple[int, int],
    rate: int,
    options: dict[str, str] | None,
    realtime: bool | None = None,
    encoder: str | None = "libx264",
    shared_memory: bool | None = None,
    wire_format: str | None = None,
) -> framecast.StreamWriter:
    """A StreamWriter with one rgb24 video stream (not opened yet).

    ``shared_memory``: None is the SDK's default, which on this machine (a loopback server) puts
    payloads into the session's shared memory; False sends them over the websocket, as a client
    on another machine does (and then, by default, as yuv420p: ``wire_format``).
    """
    writer = framecast.StreamWriter(dst, server=server, realtime=realtime, shared_memory=shared_memory)
    width, height = size
    writer.add_video_stream(
        frame_rate=rate,
        width=width,
        height=height,
        format="rgb24",
        encoder=encoder,
        encoder_option=options,
        wire_format=wire_format,
    )
    return writer


def stream_counters(summary: dict[str, Any] | None, index: int = 0) -> dict[str, Any]:
    """Counters of stream ``index`` from a writer's final summary ({} if there is none)."""
    if not summary:
        return {}
    return dict(summary["streams"][index]["counters"])
