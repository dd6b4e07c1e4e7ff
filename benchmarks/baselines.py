"""What framecast is measured against, run in this process (or a child) with the same settings.

- PyAV in-process: what a user would write without framecast (``VideoFrame.from_ndarray``,
  ``stream.encode``, ``container.mux``); the rgb24 -> yuv420p conversion happens inside encode
  (swscale), as in framecast's encoder process with FRAMECAST_RGB_CONVERSION=swscale (by default
  framecast converts RGB with libyuv, 4-5x faster: its own work, which the ratios include).
- PyAV in real time, one process per stream: what a user would run instead of framecast's
  concurrent live sessions (``pyav_realtime_sessions``): each process encodes one frame every
  1/rate s of wall clock, as a live encoder does.
- An ffmpeg pipe: raw rgb24 frames written to an ``ffmpeg`` subprocess's stdin, the classic way
  to encode arrays without bindings. The binary comes from imageio-ffmpeg (a wheel that ships
  one), else ``ffmpeg`` on PATH.

Both baselines get packed (H, W, 3) frames, the layout they take without a copy; framecast's SDK
gets (T, 3, H, W), the layout torchaudio's StreamWriter takes. Same pixels either way.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from .measure import sleep_until


def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: imageio-ffmpeg's, else the one on PATH."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            raise RuntimeError("no ffmpeg binary: pip install imageio-ffmpeg (the dev extra has it)") from None
        return found


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
    return out.stdout.split("\n", 1)[0].replace("ffmpeg version ", "").split(" Copyright")[0]


def _video_stream(
    container: av.container.OutputContainer, rate: int, width: int, height: int, options: dict[str, str]
) -> av.video.stream.VideoStream:
    stream = container.add_stream("libx264", rate=rate)
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.options = dict(options)
    return stream


def _frame(array: np.ndarray, pts: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
    frame.pts = pts
    return frame


def yuv420p_frames(frames_tchw: np.ndarray) -> list[av.VideoFrame]:
    """(T, 3, H, W) rgb24 frames as yuv420p AVFrames, converted once, ahead of any timing."""
    from framecast import yuv

    height, width = frames_tchw.shape[2:]
    planes = yuv.rgb_to_i420(frames_tchw)
    luma, chroma = width * height, (width // 2) * (height // 2)
    out = []
    for row in planes:
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data, h, w in (
            (frame.planes[0], row[:luma], height, width),
            (frame.planes[1], row[luma : luma + chroma], height // 2, width // 2),
            (frame.planes[2], row[luma + chroma :], height // 2, width // 2),
        ):
            view = np.frombuffer(memoryview(plane), np.uint8).reshape(h, plane.line_size)
            view[:, :w] = data.reshape(h, w)
        out.append(frame)
    return out


def encoder_alone(frames: list[av.VideoFrame], path: Path | str, rate: int, options: dict[str, str]) -> float:
    """The limit of the job: PyAV in-process encoding frames that are yuv420p already (no
    conversion, no transport) with libx264 into ``path``; returns wall seconds, open to close."""
    t0 = time.perf_counter()
    container = av.open(str(path), "w")
    stream = _video_stream(container, rate, frames[0].width, frames[0].height, options)
    for i, frame in enumerate(frames):
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return time.perf_counter() - t0


def pyav_pipelined(frames_tchw: np.ndarray, path: Path | str, rate: int, options: dict[str, str]) -> float:
    """The least any design adds to the encoder alone on this machine: in-process, one thread
    converts each (3, H, W) rgb24 frame to yuv420p with libyuv (framecast's converter) while this
    one encodes the frame before with libx264 straight from the converted memory, eight frames in
    flight at most; no transport, no session. Returns wall seconds, open to close."""
    from framecast import yuv

    height, width = frames_tchw.shape[2:]
    converted: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=8)

    def convert() -> None:
        for k in range(len(frames_tchw)):
            out = np.empty((1, yuv.frame_bytes(width, height)), dtype=np.uint8)
            yuv.rgb_to_i420_into(frames_tchw[k : k + 1], out)
            converted.put(out)
        converted.put(None)

    t0 = time.perf_counter()
    container = av.open(str(path), "w")
    stream = _video_stream(container, rate, width, height, options)
    converter = threading.Thread(target=convert, name="convert", daemon=True)
    converter.start()
    pts = 0
    while (planes := converted.get()) is not None:
        frame = av.VideoFrame.from_numpy_buffer(planes.reshape(height * 3 // 2, width), format="yuv420p")
        frame.pts = pts
        pts += 1
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    converter.join()
    return time.perf_counter() - t0


#: Frames the websocket baseline's client sends ahead of their ACKs (the SDK's default window).
WEBSOCKET_WINDOW = 8


def _websocket_encoder(ports: multiprocessing.queues.Queue, path: str, rate: int, options: dict[str, str]) -> None:
    """The websocket baseline's server (a process of its own): websockets' threaded server, one
    connection. The first text message gives the frame size; each binary message after it is one
    yuv420p frame, encoded with libx264 straight from the received bytes and answered with an
    empty binary ACK; the text "end" flushes and closes the file, and is answered with "done"."""
    from websockets.sync.server import ServerConnection, serve

    def handle(ws: ServerConnection) -> None:
        width, height = (int(v) for v in str(ws.recv()).split("x"))
        container = av.open(path, "w")
        stream = _video_stream(container, rate, width, height, options)
        pts = 0
        for message in ws:
            if isinstance(message, str):
                break
            planes = np.frombuffer(message, np.uint8).reshape(height * 3 // 2, width)
            frame = av.VideoFrame.from_numpy_buffer(planes, format="yuv420p")
            frame.pts = pts
            pts += 1
            container.mux(stream.encode(frame))
            ws.send(b"")
        container.mux(stream.encode(None))
        container.close()
        ws.send("done")
        threading.Thread(target=server.shutdown, daemon=True).start()  # one connection, then exit

    with serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        ports.put(server.socket.getsockname()[1])
        server.serve_forever()


def pyav_websocket(frames_tchw: np.ndarray, path: Path | str, rate: int, options: dict[str, str]) -> float:
    """The least a websocket design adds, for a client on another machine: this process converts
    each (3, H, W) rgb24 frame to yuv420p with libyuv and sends it as one masked binary message
    (websockets' client, as RFC 6455 asks of every client; the socket unpaced, as the SDK's), at
    most ``WEBSOCKET_WINDOW`` frames ahead of their ACKs; a process with websockets' own server
    encodes each as it comes (``_websocket_encoder``). No session, no checks, no shared memory.
    Returns wall seconds from connecting to the file closed (the server process is started
    before; its container is opened after the connection, inside the timing)."""
    from websockets.sync.client import connect

    from framecast import sockets, yuv

    height, width = frames_tchw.shape[2:]
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.queues.Queue = ctx.Queue()
    server = ctx.Process(target=_websocket_encoder, args=(ports, str(path), rate, options), daemon=True)
    server.start()
    try:
        url = f"ws://127.0.0.1:{ports.get(timeout=60)}"
        planes = np.empty((1, yuv.frame_bytes(width, height)), dtype=np.uint8)
        t0 = time.perf_counter()
        with connect(url, sock=sockets.loopback_socket(url, 10), max_size=None, compression=None) as ws:
            ws.send(f"{width}x{height}")
            acked = 0
            for k in range(len(frames_tchw)):
                while k - acked >= WEBSOCKET_WINDOW:
                    ws.recv(timeout=60)
                    acked += 1
                yuv.rgb_to_i420_into(frames_tchw[k : k + 1], planes)
                ws.send(planes.data.cast("B"))
            for _ in range(len(frames_tchw) - acked):
                ws.recv(timeout=60)
            ws.send("end")
            if ws.recv(timeout=60) != "done":
                raise RuntimeError("the websocket baseline's server did not close its file")
        seconds = time.perf_counter() - t0
    finally:
        server.join(30)
        if server.is_alive():
            server.kill()
            server.join(5)
    return seconds


def pyav_encode(
    frames_hwc: np.ndarray, path: Path | str, rate: int, options: dict[str, str], format: str | None = None
) -> float:
    """Encode (T, H, W, 3) rgb24 frames with libx264 into ``path``; returns wall seconds, open to close."""
    t0 = time.perf_counter()
    container = av.open(str(path), "w", format=format)
    stream = _video_stream(container, rate, frames_hwc.shape[2], frames_hwc.shape[1], options)
    for i, array in enumerate(frames_hwc):
        container.mux(stream.encode(_frame(array, i)))
    container.mux(stream.encode(None))
    container.close()
    return time.perf_counter() - t0


def ffmpeg_pipe_encode(frames_hwc: np.ndarray, path: Path | str, rate: int, preset: str) -> float:
    """Pipe (T, H, W, 3) rgb24 frames into ``ffmpeg ... -c:v libx264 -preset P``; returns wall seconds,
    from starting the process to its exit. ``-pix_fmt yuv420p`` as PyAV and framecast pick it (left
    alone, ffmpeg would pick yuv444p for rgb24 input, a different amount of work)."""
    height, width = frames_hwc.shape[1:3]
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(rate),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-pix_fmt",
        "yuv420p",
        str(path),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for frame in frames_hwc:
            proc.stdin.write(frame.data)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    assert proc.stderr is not None
    err = proc.stderr.read()  # only errors (-loglevel error): cannot fill the pipe while stdin is written
    proc.wait(300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return elapsed


def pyav_encode_fps(frames_hwc: np.ndarray, rate: int, options: dict[str, str], repeat: int = 1) -> float:
    """Frames per second PyAV encodes ``frames_hwc`` (x ``repeat``) into the null muxer, in this process."""
    t0 = time.perf_counter()
    container = av.open("null", "w", format="null")
    stream = _video_stream(container, rate, frames_hwc.shape[2], frames_hwc.shape[1], options)
    for r in range(repeat):
        for i, array in enumerate(frames_hwc):
            container.mux(stream.encode(_frame(array, r * len(frames_hwc) + i)))
    container.mux(stream.encode(None))
    container.close()
    return len(frames_hwc) * repeat / (time.perf_counter() - t0)


def pyav_realtime_latency(frames_hwc: np.ndarray, rate: int, options: dict[str, str], count: int) -> list[float]:
    """Per-frame milliseconds from having a frame to its packet muxed, in this process, one frame
    every 1/rate s (the floor framecast's latency is compared with). Muxes into the null muxer."""
    container = av.open("null", "w", format="null")
    stream = _video_stream(container, rate, frames_hwc.shape[2], frames_hwc.shape[1], options)
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        sleep_until(start + i / rate)
        t0 = time.perf_counter()
        packets = stream.encode(_frame(frames_hwc[i % len(frames_hwc)], i))
        container.mux(packets)
        latencies.append((time.perf_counter() - t0) * 1000)
    container.mux(stream.encode(None))
    container.close()
    return latencies


def count_video_packets(path: Path | str) -> int:
    """Video packets in a file (demuxed, not decoded): a cheap check that an output is complete."""
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.size)


def _realtime_process(
    frames_hwc: np.ndarray,
    rate: int,
    options: dict[str, str],
    count: int,
    offset: float,
    go: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue,
    index: int,
) -> None:
    """One live PyAV encoder: open, wait for the others, then frame i at start + offset + i/rate."""
    try:
        container = av.open("null", "w", format="null")
        stream = _video_stream(container, rate, frames_hwc.shape[2], frames_hwc.shape[1], options)
        go.wait(120)
        latencies = []
        cpu0 = time.thread_time()
        start = time.perf_counter() + offset
        for i in range(count):
            due = start + i / rate
            sleep_until(due)
            container.mux(stream.encode(_frame(frames_hwc[i % len(frames_hwc)], i)))
            latencies.append((time.perf_counter() - due) * 1000)
        cpu = time.thread_time() - cpu0
        container.mux(stream.encode(None))
        container.close()
        results.put((index, {"latencies_ms": latencies, "cpu_ms_per_frame": cpu / count * 1000}))
    except BaseException as exc:  # reported, not raised: the level fails with the reason
        go.abort()
        results.put((index, {"error": f"{type(exc).__name__}: {exc}"}))


def pyav_realtime_sessions(
    frames_hwc: np.ndarray,
    rate: int,
    options: dict[str, str],
    seconds: float,
    offsets: list[float],
    on_start: Callable[[], object] | None = None,
) -> list[dict]:
    """Run ``len(offsets)`` live PyAV encoders at once, one process each (forked, so the frames are
    shared, not copied), encoding into the null muxer; process k starts ``offsets[k]`` s after the
    common start, and ``on_start`` is called in this process at that start. Per process:
    ``latencies_ms`` (per frame, from the moment it was due, i.e. when a live source would hand it
    over, to its packets muxed) and ``cpu_ms_per_frame``; or ``error``."""
    ctx = multiprocessing.get_context("fork")
    go = ctx.Barrier(len(offsets) + 1)
    results = ctx.Queue()
    count = int(seconds * rate)
    procs = [
        ctx.Process(
            target=_realtime_process,
            args=(frames_hwc, rate, options, count, offset, go, results, k),
            daemon=True,
            name=f"pyav-live-{k}",
        )
        for k, offset in enumerate(offsets)
    ]
    for proc in procs:
        proc.start()
    try:
        go.wait(120)
    except threading.BrokenBarrierError:  # a process failed to open; its result says why
        pass
    else:
        if on_start is not None:
            on_start()
    out: list[dict] = [{"error": "no result (the process died)"} for _ in procs]
    deadline = time.monotonic() + seconds + max(offsets, default=0.0) + 180
    for _ in procs:
        try:
            index, result = results.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue.Empty:  # a process hung or died; its slot keeps the error
            break
        out[index] = result
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return out
