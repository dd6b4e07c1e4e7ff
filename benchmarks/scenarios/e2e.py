"""1. End to end: framecast client -> server -> file, against PyAV in-process and an ffmpeg pipe.

The same precomputed frames (1280x720 rgb24, a moving pattern) are encoded with libx264
preset=ultrafast into MP4, in rounds whose order rotates; each contender's median is reported.
Every timing runs from nothing to a complete file: framecast's includes creating the session
(its encoder process) and writing the trailer; PyAV's opening the container; the pipe's starting
ffmpeg. framecast writes 1-frame chunks (frames arriving one at a time, as from a model).

framecast runs three times per round:
- to a server-side file, ``ServerFile(..., crash_safe=False)``: plain MP4 like the baselines
  (the default, crash-safe fragmented MP4, flushes every packet), with the SDK's defaults, which
  on one machine put the payloads into the session's shared memory. This is the figure held to
  the targets: client -> server -> file.
- the same with ``shared_memory=False``: every payload over the websocket, as from another
  machine. Reported beside it.
- to a local path, the README's first example: the encoded bytes come back over the websocket
  and the SDK writes them. Reported beside it.

During each server-file run the CPU seconds of the client, the server's main process (event
loop) and the session's encoder process are read, so the table says where the cores went.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import framecast

from ..baselines import count_video_packets, ffmpeg_pipe_encode, pyav_encode
from ..measure import median, own_cpu_seconds, process_cpu_seconds
from ..media import moving_frames
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .common import ULTRAFAST, video_writer

NAME = "e2e"
TITLE = "End to end: client -> server -> file vs PyAV in-process vs ffmpeg pipe"


def _framecast(
    server: BenchServer, frames: Any, dst: Any, rate: int, shared_memory: bool | None = None
) -> tuple[float, dict[str, float]]:
    """Seconds to write ``frames`` 1 frame per chunk into ``dst``; and CPU cores used, by process."""
    size = (frames.shape[3], frames.shape[2])
    cpu_client, cpu_server = own_cpu_seconds(), server.cpu_seconds()
    t0 = time.perf_counter()
    writer = video_writer(dst, server.url, size, rate, ULTRAFAST, shared_memory=shared_memory)
    writer.open()
    for i in range(len(frames)):
        writer.write_video_chunk(0, frames[i : i + 1])
    writer.flush()
    t1 = time.perf_counter()
    pid = server.session(writer.session_id)["encoder_pid"]  # alive until close()
    cores = {
        "client": (own_cpu_seconds() - cpu_client) / (t1 - t0),
        "server": (server.cpu_seconds() - cpu_server) / (t1 - t0),
        "encoder": process_cpu_seconds(pid) / (t1 - t0),
    }
    t_rest = time.perf_counter() - t1  # the REST call above is not part of the timing
    writer.close()
    counters = writer.summary["streams"][0]["counters"] if writer.summary else {}
    if counters.get("frames") != len(frames):
        raise RuntimeError(f"framecast took {counters.get('frames')} frames, expected {len(frames)}")
    return time.perf_counter() - t0 - t_rest, cores


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.e2e_size
    n, rate = settings.e2e_frames, settings.frame_rate
    tchw = moving_frames(n, height, width, "tchw")
    thwc = moving_frames(n, height, width, "thwc")
    outputs = {
        "pyav": workdir / "e2e-pyav.mp4",
        "ffmpeg": workdir / "e2e-ffmpeg.mp4",
        "local_file": workdir / "e2e-framecast.mp4",
    }
    times: dict[str, list[float]] = {k: [] for k in ("server_file", "websocket", "local_file", "pyav", "ffmpeg")}
    cores: list[dict[str, float]] = []
    cores_websocket: list[dict[str, float]] = []
    failed: dict[str, str] = {}

    with BenchServer() as server:
        server_dst = framecast.ServerFile("e2e.mp4", crash_safe=False, overwrite=True)
        # Warm-up, untimed: the server's forkserver, x264's code and tables, the page cache.
        warm = min(n, 10)
        _framecast(server, tchw[:warm], server_dst, rate)
        pyav_encode(thwc[:warm], workdir / "warm-pyav.mp4", rate, ULTRAFAST)
        ffmpeg_pipe_encode(thwc[:warm], workdir / "warm-ffmpeg.mp4", rate, ULTRAFAST["preset"])

        def server_file() -> None:
            seconds, used = _framecast(server, tchw, server_dst, rate)
            times["server_file"].append(seconds)
            cores.append(used)

        def websocket() -> None:
            seconds, used = _framecast(server, tchw, server_dst, rate, shared_memory=False)
            times["websocket"].append(seconds)
            cores_websocket.append(used)

        def local_file() -> None:
            times["local_file"].append(_framecast(server, tchw, outputs["local_file"], rate)[0])

        contenders = {
            "server_file": server_file,
            "websocket": websocket,
            "local_file": local_file,
            "pyav": lambda: times["pyav"].append(pyav_encode(thwc, outputs["pyav"], rate, ULTRAFAST)),
            "ffmpeg": lambda: times["ffmpeg"].append(
                ffmpeg_pipe_encode(thwc, outputs["ffmpeg"], rate, ULTRAFAST["preset"])
            ),
        }
        order = list(contenders)
        for r in range(settings.e2e_rounds):
            for k in range(len(order)):
                name = order[(k + r) % len(order)]
                if name in failed:
                    continue
                try:
                    contenders[name]()
                except Exception:  # report it, measure the others
                    failed[name] = traceback.format_exc()
        server_packets = count_video_packets(server.output_dir / "e2e.mp4") if "server_file" not in failed else n

    for name, path in outputs.items():
        packets = count_video_packets(path) if name not in failed else n
        if packets != n:
            failed[name] = f"{path.name} has {packets} video packets, expected {n}"
    if server_packets != n:
        failed["server_file"] = f"the server file has {server_packets} video packets, expected {n}"
    if {"server_file", "pyav", "ffmpeg"} & set(failed):
        raise RuntimeError("; ".join(f"{k}: {v.splitlines()[-1]}" for k, v in failed.items()))

    fps = {k: (n / median(v) if k not in failed else float("nan")) for k, v in times.items()}
    result.add("fps_server_file", "framecast -> server file (fps)", fps["server_file"], "fps")
    result.add("fps_websocket", "framecast -> server file, payloads over the websocket (fps)", fps["websocket"], "fps")
    result.add("fps_local_file", "framecast -> local file, bytes back (fps)", fps["local_file"], "fps")
    result.add("fps_pyav", "PyAV in-process (fps)", fps["pyav"], "fps")
    result.add("fps_ffmpeg", "ffmpeg pipe (fps)", fps["ffmpeg"], "fps")
    result.add("ratio_pyav", "framecast / PyAV", fps["server_file"] / fps["pyav"], "x", 2)
    result.add("ratio_ffmpeg", "framecast / ffmpeg pipe", fps["server_file"] / fps["ffmpeg"], "x", 2)
    result.add("ratio_websocket_pyav", "framecast over the websocket / PyAV", fps["websocket"] / fps["pyav"], "x", 2)
    result.add("ratio_local_pyav", "framecast (local file) / PyAV", fps["local_file"] / fps["pyav"], "x", 2)
    for part in ("client", "server", "encoder"):
        result.add(f"cores_{part}", f"framecast cores used: {part}", median(c[part] for c in cores), "cores", 2)
    if cores_websocket:
        for part in ("client", "server", "encoder"):
            result.add(
                f"cores_websocket_{part}",
                f"over the websocket, cores used: {part}",
                median(c[part] for c in cores_websocket),
                "cores",
                2,
            )
    result.target("framecast >= 0.9x PyAV in-process", "ratio_pyav", ">=", 0.9, "x")
    result.target("framecast ahead of the ffmpeg pipe", "ratio_ffmpeg", ">=", 1.0, "x")
    result.failures = [f"framecast -> {k}: {v.strip()}" for k, v in failed.items()]
    result.series = {"fps": fps, "times": times, "cores": cores, "cores_websocket": cores_websocket}
    result.notes.append(
        f"{width}x{height} rgb24, {n} frames, libx264 preset=ultrafast, median of {settings.e2e_rounds} rounds; "
        "framecast writes 1-frame chunks; every output checked for all its packets."
    )
    return result
