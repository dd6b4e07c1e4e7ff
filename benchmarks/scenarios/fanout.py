"""4b. Fan-out (issue 15): one encode muxed into three outputs, against one output and three sessions.

A session with several destinations encodes each stream once in its encoder process and muxes
the packets into every destination. What that costs is measured side by side, in one run, on
the same content: 1280x720 rgb24 at 30 fps (the moving pattern) plus 48 kHz stereo audio,
libx264 with framecast's live settings spelled out (veryfast, zerolatency, a keyframe every 2 s,
no B-frames) and AAC, real time (``realtime=True``) in every case, the client writing one frame
and 1/30 s of audio every 1/30 s of wall clock:

- **one output**: one session, one destination: a server file (``.mkv``);
- **three outputs**: one session, three destinations: the same server file and two RTMP
  destinations, each on its own nginx-rtmp (``tests.peers.NginxRtmp``: two platforms);
- **three sessions**: the same three destinations, one session each, all at once (what a user
  does without fan-out).

The CPU counted is the framecast server's: its main process (the event loop: every session's
chunks, ACKs and output states), each session's encoder process and the relay process of each
RTMP destination (which connects it and muxes into it), in CPU seconds per second of media. A
session's encoder and relays are read once every output streams (the relays started and
connected: a relay's start is a one-off, not streaming) and again after ``flush()`` (every frame
encoded and muxed into every output, the trailer not yet written); the server's main process from
the moment every session starts writing to the moment all have flushed. So the streaming is
counted whole, its first keyframe included, and it does not
matter whether a case kept up with real time: three separate 720p sessions can fall behind on two
cores, which a CPU-per-wall-second reading would undercount. Neither the client (this process,
which writes the frames once per session) nor nginx (the receiver, reported beside for scale) is
counted, nor the server's idle helpers (the forkserver, the spare encoder process). Each case's
worst ``pacing.max_lateness_ms`` and the whole machine's busy cores while it streamed say whether
it kept up. The three cases run in rounds whose order rotates; each case's median
is reported, and the ratios are taken between those medians. Every session must take and encode
every frame, every output must end closed with nothing dropped, and the file and both recordings
must hold every video packet, or the run fails.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import framecast

from ..baselines import count_video_packets
from ..measure import machine_busy_seconds, median, processes_cpu_seconds, sleep_until
from ..media import moving_frames, tone
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .common import LIVE, stream_counters

NAME = "fanout"
TITLE = "Fan-out: one encode to three outputs vs one output vs three sessions"

#: The issue's bound: three outputs "well under" this times the CPU of one.
TARGET_RATIO = 1.3
DISTINCT_FRAMES = 60
CASES = ("one", "three", "separate")
LABELS = {
    "one": "1 session, 1 output (server file)",
    "three": "1 session, 3 outputs (file + 2 RTMP)",
    "separate": "3 sessions, 1 output each",
}


def _session(
    server: BenchServer,
    dst: Any,
    frames: np.ndarray,
    audio: np.ndarray,
    rate: int,
    sample_rate: int,
    steps: int,
    barriers: tuple[threading.Barrier, threading.Barrier],
    out: dict[str, Any],
) -> None:
    """One real-time session writing ``steps`` frames (and their audio); fills ``out`` with its
    encoder process's CPU seconds from open to flushed, its counters and its pacing."""
    go, flushed = barriers
    try:
        writer = framecast.StreamWriter(dst, server=server.url, realtime=True)
        writer.add_video_stream(
            frame_rate=rate,
            width=frames.shape[3],
            height=frames.shape[2],
            format="rgb24",
            encoder="libx264",
            encoder_option=LIVE,
        )
        writer.add_audio_stream(sample_rate=sample_rate, num_channels=audio.shape[1], encoder="aac")
        writer.open()
        pid = server.session(writer.session_id)["encoder_pid"]  # alive until close()
        _wait_connected(server, writer.session_id)
        pids = _tree(pid)  # the encoder and its relays (one process per network output)
        cpu0 = processes_cpu_seconds(pids)
        go.wait(120)
        start = time.perf_counter()
        for i in range(steps):
            sleep_until(start + i / rate)
            k = i % len(frames)
            writer.write_video_chunk(0, frames[k : k + 1])
            writer.write_audio_chunk(1, audio)
        writer.flush()  # every frame encoded and its packets muxed into every output
        out["encoder_cpu"] = processes_cpu_seconds(pids) - cpu0
        out["behind_s"] = time.perf_counter() - start - steps / rate
        flushed.wait(120)
        writer.close()
        video = stream_counters(writer.summary, 0)
        pacing = (writer.summary or {}).get("pacing") or {}
        out.update(
            frames=video.get("frames", 0),
            packets=video.get("packets", 0),
            outputs=writer.outputs,
            max_lateness_ms=float(pacing.get("max_lateness_ms", float("nan"))),
        )
    except Exception as exc:  # reported by the case, which fails the scenario
        go.abort()
        flushed.abort()
        out["error"] = f"{type(exc).__name__}: {exc}"


def _wait_connected(server: BenchServer, session_id: str, timeout: float = 60.0) -> None:
    """Until every output of the session streams: its relays started and connected, so that what
    is measured is streaming, not a relay process starting."""
    deadline = time.monotonic() + timeout
    while not all(o["state"] == "streaming" for o in server.session(session_id)["outputs"]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"outputs not all streaming after {timeout:g} s")
        time.sleep(0.05)


def _tree(pid: int | None) -> list[int]:
    """``pid`` and every process under it (nginx's master and worker)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _case(
    server: BenchServer,
    sessions: list[Any],
    nginx_pids: list[int],
    frames: np.ndarray,
    audio: np.ndarray,
    rate: int,
    sample_rate: int,
    seconds: float,
) -> dict[str, Any]:
    """Run ``sessions`` (one dst each) at once; CPU seconds per media second of the server's main
    process and of the sessions' encoder processes, from the common start to every session flushed."""
    steps = int(round(seconds * rate))
    barriers = (threading.Barrier(len(sessions) + 1), threading.Barrier(len(sessions) + 1))
    outs: list[dict[str, Any]] = [{} for _ in sessions]
    threads = [
        threading.Thread(
            target=_session,
            name=f"fanout-{i}",
            args=(server, dst, frames, audio, rate, sample_rate, steps, barriers, out),
        )
        for i, (dst, out) in enumerate(zip(sessions, outs))
    ]
    for t in threads:
        t.start()
    measured: dict[str, float] = {}
    with contextlib.suppress(threading.BrokenBarrierError):  # a session failed: it says why
        barriers[0].wait(180)
        server0, nginx0, machine0 = server.cpu_seconds(), processes_cpu_seconds(nginx_pids), machine_busy_seconds()
        t0 = time.perf_counter()
        barriers[1].wait(seconds + 180)
        elapsed = time.perf_counter() - t0
        measured = {
            "server": (server.cpu_seconds() - server0) / seconds,
            "nginx": (processes_cpu_seconds(nginx_pids) - nginx0) / seconds,
            "machine_cores": (machine_busy_seconds() - machine0) / elapsed,
        }
    for t in threads:
        t.join(seconds + 180)
    errors = [o["error"] for o in outs if "error" in o]
    for i, o in enumerate(outs):
        if "error" in o:
            continue
        if o["frames"] != steps or o["packets"] != steps:
            errors.append(f"session {i}: {o['frames']} frames taken, {o['packets']} packets, expected {steps}")
        for output in o["outputs"]:
            counters = output.get("counters") or {}
            if output.get("state") != "closed" or counters.get("dropped") or not counters.get("packets"):
                errors.append(
                    f"session {i} output {output.get('index')}: state {output.get('state')}, "
                    f"counters {counters}, error {output.get('error')}"
                )
    if errors or not measured:
        raise RuntimeError("; ".join(errors) or "the sessions did not all start")
    encoders = sum(o["encoder_cpu"] for o in outs) / seconds
    return {
        **measured,
        "encoders": encoders,
        "cores": measured["server"] + encoders,
        "max_lateness_ms": max(o["max_lateness_ms"] for o in outs),
        "behind_s": max(o["behind_s"] for o in outs),
    }


def _check_packets(path: Path, expected: int) -> None:
    packets = count_video_packets(path)
    if packets != expected:
        raise RuntimeError(f"{path.name} has {packets} video packets, expected {expected}")


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    # nginx is the RTMP receiver the tests use (tests/peers.py); imported here so that the other
    # scenarios run without it.
    from tests.peers import NginxRtmp

    result = ScenarioResult(NAME, TITLE)
    width, height = settings.fanout_size
    rate, sample_rate = settings.frame_rate, settings.sample_rate
    seconds = settings.fanout_seconds
    frames = moving_frames(DISTINCT_FRAMES, height, width, "tchw")
    audio = tone(1 / rate, sample_rate)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}

    with (
        tempfile.TemporaryDirectory(prefix="framecast-fanout-", dir=workdir) as tmp,
        NginxRtmp(Path(tmp) / "rtmp-a") as rtmp_a,
        NginxRtmp(Path(tmp) / "rtmp-b") as rtmp_b,
        BenchServer() as server,
    ):
        nginx_pids = _tree(rtmp_a.proc.pid if rtmp_a.proc else None) + _tree(rtmp_b.proc.pid if rtmp_b.proc else None)

        def destinations(tag: str) -> tuple[Any, str, str]:
            return (
                framecast.ServerFile(f"fanout-{tag}.mkv", overwrite=True),
                rtmp_a.url(f"{tag}-a"),
                rtmp_b.url(f"{tag}-b"),
            )

        def measure(case: str, tag: str, media_seconds: float) -> dict[str, Any]:
            file, url_a, url_b = destinations(tag)
            sessions = {"one": [file], "three": [[file, url_a, url_b]], "separate": [file, url_a, url_b]}[case]
            measured = _case(server, sessions, nginx_pids, frames, audio, rate, sample_rate, media_seconds)
            expected = int(round(media_seconds * rate))
            _check_packets(server.output_dir / f"fanout-{tag}.mkv", expected)
            if case != "one":
                _check_packets(rtmp_a.recording(f"{tag}-a"), expected)
                _check_packets(rtmp_b.recording(f"{tag}-b"), expected)
            return measured

        # Warm-up, unmeasured: the forkserver, x264's code and tables, nginx's first publishers.
        measure("three", "warm", min(seconds, 2.0))
        for r in range(settings.fanout_rounds):
            for k in range(len(CASES)):
                case = CASES[(k + r) % len(CASES)]
                runs[case].append(measure(case, f"r{r}-{case}", seconds))

    def med(case: str, key: str) -> float:
        return median(m[key] for m in runs[case])

    cpu = {case: med(case, "cores") for case in CASES}
    for case in CASES:
        result.add(f"cpu_{case}", f"{LABELS[case]}: server CPU s / media s", cpu[case], "s/s", 3)
    result.add("ratio_three_one", "3 outputs / 1 output (CPU)", cpu["three"] / cpu["one"], "x", 2)
    result.add(
        "ratio_separate_three", "3 sessions / 1 session with 3 outputs (CPU)", cpu["separate"] / cpu["three"], "x", 2
    )
    result.add(
        "extra_output",
        "each extra output, CPU of the single output's",
        (cpu["three"] - cpu["one"]) / 2 / cpu["one"] * 100,
        "%",
        1,
    )
    for case in CASES:
        result.add(f"server_{case}", f"  {case}: of which the server's main process", med(case, "server"), "s/s", 3)
        result.add(f"encoders_{case}", f"  {case}: of which encoder processes", med(case, "encoders"), "s/s", 3)
    for case in ("three", "separate"):
        result.add(f"nginx_{case}", f"  {case}: both nginx (the receivers, not counted)", med(case, "nginx"), "s/s", 3)
    for case in CASES:
        worst = max(m["max_lateness_ms"] for m in runs[case])
        result.add(f"lateness_{case}", f"{case}: worst pacing max_lateness", worst, "ms", 0)
    for case in CASES:
        result.add(
            f"machine_{case}",
            f"{case}: machine busy while streaming (all processes)",
            med(case, "machine_cores"),
            "cores",
            2,
        )
    result.target(f"3 outputs < {TARGET_RATIO}x the CPU of 1", "ratio_three_one", "<", TARGET_RATIO, "x")
    result.series = {"runs": runs, "cpu": cpu, "target": TARGET_RATIO}
    result.notes.append(
        f"{width}x{height}@{rate} rgb24 + {sample_rate} Hz stereo, libx264 {LIVE} + AAC, real time, "
        f"{seconds:g} s per case, median of {settings.fanout_rounds} rounds; CPU of the server's main process "
        "and the sessions' encoder processes from the common start to every session flushed, per media second; "
        "the client and nginx not counted."
    )
    return result
