"""2. Transport alone: raw 1280x720 rgb24 chunks into a ``Discard(encode=False)`` session.

The server's encoder process takes each chunk and acknowledges it without building frames or
encoding, so this measures the SDK, the websocket, the server's event loop and the hand-over to
the encoder process. The client writes for a fixed time, then flushes (waits for the last ACK);
GB/s counts payload bytes. Chunks of 1 and 8 frames; a 8-frame chunk (22 MB) is more than the
server's 16 MiB message limit, so the SDK splits it in two messages.

Two ways, side by side: payloads over the websocket (``shared_memory=False``, as from another
machine; the figure held to the target), and the SDK's default on one machine, payloads copied
into the session's shared memory (then the websocket carries headers and offsets only, and this
measures that copy and the per-chunk round trip).

Side by side, the ceiling of the machine for the same bytes: plain TCP over loopback from this
process (``socket.sendall``) to another Python process (``recv_into`` a reused buffer).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import framecast

from ..measure import median, own_cpu_seconds, process_cpu_seconds
from ..media import moving_frames
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .common import video_writer

NAME = "transport"
TITLE = "Transport alone: raw chunks into Discard(encode=False)"

#: Distinct frames cycled through (so the bytes are not one cache-hot buffer).
DISTINCT_FRAMES = 64

_SINK = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 22); view = memoryview(buf); total = 0
while True:
    n = conn.recv_into(view)
    if not n:
        break
    total += n
conn.sendall(str(total).encode()); conn.close()
"""


#: The two ways payloads travel: over the websocket, or through same-host shared memory.
MODES = {"websocket": False, "shared": True}


def _framecast(server: BenchServer, frames, chunk: int, seconds: float, shared_memory: bool) -> dict[str, float]:
    size = (frames.shape[3], frames.shape[2])
    writer = video_writer(
        framecast.Discard(encode=False), server.url, size, 30, None, encoder=None, shared_memory=shared_memory
    )
    writer.open()
    pid = server.session(writer.session_id)["encoder_pid"]
    cpu = (own_cpu_seconds(), server.cpu_seconds(), process_cpu_seconds(pid))
    sent_bytes = chunks = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        piece = frames[i : i + chunk]
        writer.write_video_chunk(0, piece)
        sent_bytes += piece.nbytes
        chunks += 1
        i = (i + chunk) % (len(frames) - chunk + 1)
    writer.flush()
    elapsed = time.perf_counter() - t0
    used = (own_cpu_seconds() - cpu[0], server.cpu_seconds() - cpu[1], process_cpu_seconds(pid) - cpu[2])
    writer.close()
    counters = writer.summary["streams"][0]["counters"] if writer.summary else {}
    if counters.get("chunks", 0) < chunks:
        raise RuntimeError(f"server counted {counters.get('chunks')} chunks, {chunks} were written")
    return {
        "gbps": sent_bytes / elapsed / 1e9,
        "chunks_per_s": chunks / elapsed,
        "frames_per_s": chunks * chunk / elapsed,
        "cores_client": used[0] / elapsed,
        "cores_server": used[1] / elapsed,
        "cores_encoder": used[2] / elapsed,
    }


def _tcp(frames, seconds: float) -> float:
    """GB/s of plain loopback TCP between two Python processes, for the same frames."""
    import socket

    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    port = int(sink.stdout.readline())
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sent = 0
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            sock.sendall(frames[i].data)
            sent += frames[i].nbytes
            i = (i + 1) % len(frames)
        sock.shutdown(socket.SHUT_WR)
        received = int(sock.recv(64))
        elapsed = time.perf_counter() - t0
    sink.wait(10)
    if received != sent:
        raise RuntimeError(f"TCP sink got {received} bytes, {sent} were sent")
    return sent / elapsed / 1e9


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.transport_size
    frames = moving_frames(DISTINCT_FRAMES, height, width, "tchw")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {
        (mode, c): [] for mode in MODES for c in settings.transport_chunk_frames
    }
    tcp: list[float] = []
    with BenchServer() as server:
        for shared in MODES.values():  # warm-up
            _framecast(server, frames, 1, min(0.5, settings.transport_seconds), shared)
        for _ in range(settings.transport_rounds):
            for mode, chunk in runs:
                runs[mode, chunk].append(_framecast(server, frames, chunk, settings.transport_seconds, MODES[mode]))
            tcp.append(_tcp(frames, settings.transport_seconds))

    best = {mode: 0.0 for mode in MODES}
    for (mode, chunk), measured in runs.items():
        gbps = median(m["gbps"] for m in measured)
        best[mode] = max(best[mode], gbps)
        way = "over the websocket" if mode == "websocket" else "through shared memory"
        result.add(f"gbps_{mode}_{chunk}", f"{chunk}-frame chunks {way} (GB/s)", gbps, "GB/s", 2)
        result.add(
            f"chunks_{mode}_{chunk}",
            f"{chunk}-frame chunks {way} (chunks/s)",
            median(m["chunks_per_s"] for m in measured),
            "chunks/s",
            0,
        )
        if chunk == settings.transport_chunk_frames[0]:
            for part in ("client", "server", "encoder"):
                result.add(
                    f"cores_{mode}_{part}",
                    f"cores used, {chunk}-frame {way}: {part}",
                    median(m[f"cores_{part}"] for m in measured),
                    "cores",
                    2,
                )
    result.add("gbps_best", "best over the websocket (GB/s)", best["websocket"], "GB/s", 2)
    result.add("gbps_best_shared", "best through shared memory (GB/s)", best["shared"], "GB/s", 2)
    result.add("gbps_tcp", "plain loopback TCP, Python to Python (GB/s)", median(tcp), "GB/s", 2)
    result.add("ratio_tcp", "best over the websocket / plain TCP", best["websocket"] / median(tcp), "x", 2)
    result.target("transport >= 1 GB/s (websocket)", "gbps_best", ">=", 1.0, "GB/s")
    result.series = {"runs": {f"{mode}:{chunk}": v for (mode, chunk), v in runs.items()}, "tcp": tcp}
    result.notes.append(
        f"{width}x{height} rgb24 ({frames[0].nbytes / 1e6:.2f} MB a frame), {settings.transport_seconds:g} s per "
        f"run, median of {settings.transport_rounds} rounds."
    )
    return result
