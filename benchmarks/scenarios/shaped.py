"""4c. A shaped link: raw video from another machine through 1 Gbit/s, in real time.

Most deployments have the client on another machine, and raw video is heavy: 1080p30 rgb24 is
1.49 Gbit/s, more than a 1 Gbit/s link carries. Here the link is a TCP proxy in this process
(``ShapedLink``) that carries client -> server bytes at ``shaped_link_bits`` per second (a token
bucket; the other direction is not limited), and the writer sends 1-frame chunks on the wall
clock at 30 fps, as a camera or a model producing frames live would, over the websocket
(``shared_memory=False``), to ``Discard()``: the encoder process only takes the chunks, so what is
measured is the transport, not x264 at 1080p on two cores.

Two runs side by side: the frames as RGB (``wire_format="rgb24"``, what every client sent before)
and as yuv420p converted by the client (the SDK's default over the websocket), half the bytes:
0.75 Gbit/s. Reported for each: whether it holds real time (how far the last ACK comes after
the media time it covers: it grows without bound when the link cannot carry the stream), and
the ACK latency p50/p99 (``measure.AckClock``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import framecast

from ..measure import AckClock, percentile, sleep_until
from ..media import moving_frames
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings

NAME = "shaped"
TITLE = "A 1 Gbit/s link: 1080p30 in real time, RGB vs yuv420p on the wire"

DISTINCT_FRAMES = 16
#: Bytes the proxy reads at a time; the token bucket lets at most this much through at once.
PIECE = 256 * 1024


class ShapedLink:
    """A TCP proxy on 127.0.0.1 to ``target_port`` that carries client -> server bytes at most
    ``rate`` bytes a second (server -> client unlimited), run on an event loop in its own thread."""

    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port = target_port
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._next_free = 0.0  # the token bucket: when the link is free again (loop time)
        self.bytes = 0  # carried client -> server

    def __enter__(self) -> ShapedLink:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pump(client_r, server_w, shaped=True),
            self._pump(server_r, client_w, shaped=False),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shaped: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(PIECE):
                if shaped:  # every connection shares the one link
                    self.bytes += len(data)
                    now = loop.time()
                    self._next_free = max(self._next_free, now) + len(data) / self.rate
                    if self._next_free - now > 0:
                        await asyncio.sleep(self._next_free - now)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def stream_through(
    link: ShapedLink, frames: Any, rate: int, seconds: float, wire: str, compression: str = "none"
) -> dict[str, float]:
    """Send ``seconds`` of 1-frame chunks at ``rate`` fps on the wall clock through ``link``; ACK
    latencies, lag, and the link's use (bits a second while it lasted)."""
    sent, start = link.bytes, time.perf_counter()
    r = _stream(link.url, frames, rate, seconds, wire, compression)
    r["link_gbits"] = (link.bytes - sent) * 8 / 1e9 / (time.perf_counter() - start)
    return r


def _stream(url: str, frames: Any, rate: int, seconds: float, wire: str, compression: str = "none") -> dict[str, float]:
    """Send ``seconds`` of 1-frame chunks at ``rate`` fps on the wall clock; ACK latencies and lag."""
    height, width = frames.shape[2:]
    writer = framecast.StreamWriter(
        framecast.Discard(), server=url, shared_memory=False, reconnect_timeout=60, compression=compression
    )
    writer.add_video_stream(frame_rate=rate, width=width, height=height, wire_format=wire)
    clock = AckClock.attach(writer)
    writer.open()
    assert writer.wire_formats == [wire], writer.wire_formats
    count = int(seconds * rate)
    start = time.perf_counter()
    late = 0
    for i in range(count):
        due = start + i / rate
        if time.perf_counter() > due + 1 / rate:
            late += 1  # the previous write blocked past this frame's time: the link is behind
        sleep_until(due)
        k = i % len(frames)
        writer.write_video_chunk(0, frames[k : k + 1])
    writer.flush()
    last_ack = max(clock.acked.values())
    writer.close()
    latencies = clock.latencies_ms(skip=rate)  # the first second: the session starting
    return {
        "lag_s": last_ack - (start + count / rate),
        "late_frames": float(late),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "gbits": frames[0].nbytes * (0.5 if wire == "yuv420p" else 1.0) * rate * 8 / 1e9,
    }


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.shaped_size
    rate, seconds = settings.frame_rate, settings.shaped_seconds
    frames = moving_frames(DISTINCT_FRAMES, height, width, "tchw")
    runs: dict[str, dict[str, float]] = {}
    with BenchServer() as server, ShapedLink(server.port, settings.shaped_link_bits / 8) as link:
        _stream(link.url, frames[:2], rate, min(seconds, 1.0), "yuv420p")  # warm-up: forkserver, first connection
        for wire in ("yuv420p", "rgb24"):
            runs[wire] = _stream(link.url, frames, rate, seconds, wire)
    link_text = f"{settings.shaped_link_bits / 1e9:.3g} Gbit/s"
    for wire, label in (("yuv420p", "yuv420p (the SDK's default)"), ("rgb24", "RGB")):
        r = runs[wire]
        result.add(f"{wire}_gbits", f"{label}: the stream's bit rate (link {link_text})", r["gbits"], "Gbit/s", 3)
        result.add(f"{wire}_lag", f"{label}: last ACK after its media time", r["lag_s"], "s", 2)
        result.add(f"{wire}_late", f"{label}: frames sent late (the link behind)", r["late_frames"], "frames", 0)
        result.add(f"{wire}_p50", f"{label}: ACK latency p50", r["p50"], "ms", 1)
        result.add(f"{wire}_p99", f"{label}: ACK latency p99", r["p99"], "ms", 1)
    result.target("yuv420p holds real time: ACK p99 < 200 ms", "yuv420p_p99", "<", 200, "ms")
    result.target("yuv420p holds real time: last ACK within 1 s", "yuv420p_lag", "<", 1.0, "s")
    return result
