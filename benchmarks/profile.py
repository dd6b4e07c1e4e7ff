"""Where the time goes: py-spy profiles of the server, one encoder process and the client.

    python -m benchmarks.profile e2e            720p ultrafast, 1-frame chunks, server file
    python -m benchmarks.profile transport      720p raw chunks into Discard(encode=False)
    python -m benchmarks.profile concurrency    N real-time 640x360 sessions (--sessions)
    python -m benchmarks.profile live-pyav --perf   the same without framecast: N live PyAV processes

py-spy samples each process 100 times a second while the workload runs (``--native`` adds C
frames, numpy's and FFmpeg's, at the cost of stopping the process for every sample), then this
prints, per process, the share of samples per thread, the functions samples ended in (self) and
the functions on the stack (inclusive). Raw profiles are left in benchmarks/results/profile-*/
(flamegraph input: ``flamegraph.pl < server.txt``). py-spy needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).

``--perf`` samples the whole machine with Linux ``perf`` instead (``perf record -a``, Debian's
``linux-perf``; root or ``kernel.perf_event_paranoid`` <= 0): CPU time per frame written, split
by who (server, encoder processes, client, anything else) and by library (libx264, libswscale,
libpython, the kernel, libc, ...). py-spy counts a thread blocked in ``read`` as a sample; perf
counts only time on a CPU, which is what the question "what does a frame cost" needs.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

import framecast

from .measure import process_cpu_seconds
from .media import moving_frames
from .scenarios.common import LIVE, ULTRAFAST, video_writer
from .server import BenchServer

HERE = Path(__file__).resolve().parent


def _spy(pid: int, out: Path, seconds: float, native: bool) -> subprocess.Popen:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-d", str(int(seconds)), "-t", "-r", "100"]
    cmd += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def summarize(path: Path, top: int = 15) -> str:
    """Threads, self and inclusive shares of a py-spy raw profile."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        rows.append((stack.split(";"), int(n)))
    total = sum(n for _, n in rows) or 1

    def short(frame: str) -> str:
        return re.sub(r" \(/.*?/(site-packages|lib/python3\.\d+|work/main)/", " (", frame)

    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, n in rows:
        threads[re.sub(r"\(\d+\)", "", stack[0])] += n
        leaf[short(stack[-1])] += n
        for frame in {short(f) for f in stack[1:]}:
            inclusive[frame] += n
    out = [f"== {path.stem}: {total} samples"]
    out += [f"  thread {v / total:6.1%}  {k}" for k, v in threads.most_common(8)]
    out += ["  self:"] + [f"    {v / total:6.1%}  {k}" for k, v in leaf.most_common(top)]
    skip = ("_bootstrap", "Thread.run", "<module>", "run_module", "_run_code", "BaseProcess", "spawn.py", "forkserver")
    useful = [(k, v) for k, v in inclusive.most_common(200) if not any(s in k for s in skip)]
    out += ["  inclusive:"] + [f"    {v / total:6.1%}  {k}" for k, v in useful[: top * 2]]
    return "\n".join(out)


def _write_frames(
    writer: framecast.StreamWriter, frames, stop: threading.Event, rate: int | None, written: list[int], slot: int
) -> None:
    start, i = time.perf_counter(), 0
    while not stop.is_set():
        if rate:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        k = i % len(frames)
        writer.write_video_chunk(0, frames[k : k + 1])
        i += 1
        written[slot] = i


PERF_HZ = 997


def _perf_exe() -> str:
    return shutil.which("perf") or "perf"


def _perf(out: Path, seconds: float) -> subprocess.Popen:
    cmd = [_perf_exe(), "record", "-a", "-F", str(PERF_HZ), "-o", str(out), "--", "sleep", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _library(dso: str) -> str:
    """A short name for a perf DSO: libx264-d6533a8d.so.165 -> libx264, [kernel.kallsyms] -> kernel."""
    if dso.startswith("[kernel"):
        return "kernel"
    name = os.path.basename(dso)
    match = re.match(r"(lib[A-Za-z0-9_+]+?)(-[0-9a-f]{8})?\.so", name)
    return match.group(1) if match else name.split(".", 1)[0] or "?"


def perf_breakdown(data: Path, roles: dict[int, str], frames: int, hz: int = PERF_HZ) -> str:
    """Milliseconds of CPU per frame, by role and library, from ``perf record -a`` samples."""
    script = subprocess.run(
        [_perf_exe(), "script", "-i", str(data), "-F", "pid,ip,dso"], capture_output=True, text=True, timeout=600
    )
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in script.stdout.splitlines():
        match = re.match(r"\s*(\d+)\s+\S+\s+\((.*)\)\s*$", line)
        if match:
            pid = int(match.group(1))
            role = "idle" if pid == 0 else roles.get(pid, "other processes")
            counts[role, _library(match.group(2))] += 1
    per_frame = 1000 / hz / max(1, frames)
    out = [f"== CPU per frame written ({frames} frames; perf at {hz} Hz, whole machine)"]
    for role in ("client", "server", "encoders", "other processes", "idle"):
        rows = sorted(((n, lib) for (r, lib), n in counts.items() if r == role), reverse=True)
        total = sum(n for n, _ in rows)
        if not total:
            continue
        out.append(f"  {role:16s} {total * per_frame:6.3f} ms")
        out += [f"      {lib:24s} {n * per_frame:6.3f} ms" for n, lib in rows[:8] if n * per_frame >= 0.005]
    return "\n".join(out)


def _live_pyav(sessions: int, seconds: float, out: Path) -> int:
    """perf's breakdown for the concurrency scenario's baseline: live PyAV processes, no framecast."""
    from .baselines import pyav_realtime_sessions
    from .scenarios.concurrency import spread_offsets

    frames = moving_frames(60, 360, 640, "thwc")
    runner = threading.Thread(
        target=pyav_realtime_sessions,
        args=(frames, 30, {**LIVE, "threads": "1"}, seconds + 6, spread_offsets(sessions)),
    )
    runner.start()
    time.sleep(3.0)  # every process started, past its first keyframe
    roles = {p.pid: "encoders" for p in psutil.Process().children(recursive=True)}
    _perf(out / "perf.data", seconds).wait()
    runner.join()
    print(perf_breakdown(out / "perf.data", roles, int(sessions * 30 * seconds)))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("workload", choices=["e2e", "transport", "concurrency", "live-pyav"])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--sessions", type=int, default=6, help="concurrency: sessions at once")
    p.add_argument("--native", action="store_true", help="include C frames (stops the process per sample)")
    p.add_argument("--perf", action="store_true", help="whole-machine CPU per frame with Linux perf, not py-spy")
    args = p.parse_args(argv)
    out = HERE / "results" / f"profile-{args.workload}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    if args.workload == "live-pyav":
        if not args.perf:
            p.error("live-pyav is profiled with --perf only")
        return _live_pyav(args.sessions, args.seconds, out)

    with BenchServer() as server:
        if args.workload == "concurrency":
            frames = moving_frames(60, 360, 640)
            writers = [
                video_writer(framecast.Discard(encode=True), server.url, (640, 360), 30, LIVE, realtime=True)
                for _ in range(args.sessions)
            ]
            rate: int | None = 30
        else:
            frames = moving_frames(64, 720, 1280)
            if args.workload == "e2e":
                dst = framecast.ServerFile("profile.mp4", crash_safe=False, overwrite=True)
                writers = [video_writer(dst, server.url, (1280, 720), 30, ULTRAFAST)]
            else:
                writers = [
                    video_writer(framecast.Discard(encode=False), server.url, (1280, 720), 30, None, encoder=None)
                ]
            rate = None
        for w in writers:
            w.open()
        stop = threading.Event()
        written = [0] * len(writers)
        threads = [
            threading.Thread(target=_write_frames, args=(w, frames, stop, rate, written, i))
            for i, w in enumerate(writers)
        ]
        for t in threads:
            t.start()
        time.sleep(1.0 if not args.perf else 3.0)  # past the start (perf: every session's first keyframe too)
        below = server.process.children(recursive=True)
        # An encoder process: a grandchild of the server (under its forkserver), the busiest one
        # (a spare waiting for the next session is one too). Not through GET /v1/sessions/{id}:
        # asking about a session makes its encoder render previews.
        encoders = [p.pid for p in below if p.ppid() != server.process.pid]
        encoder = max(encoders, key=process_cpu_seconds)
        before = sum(written)
        if args.perf:
            spies = [_perf(out / "perf.data", args.seconds)]
        else:
            spies = [
                _spy(server.process.pid, out / "server.txt", args.seconds, args.native),
                _spy(encoder, out / "encoder.txt", args.seconds, args.native),
                _spy(os.getpid(), out / "client.txt", args.seconds, False),  # itself: never --native
            ]
        for spy in spies:
            spy.wait()
        frames_in_window = sum(written) - before
        stop.set()
        for t in threads:
            t.join(30)
        for w in writers:
            w.close()
    if args.perf:
        roles = {os.getpid(): "client", server.process.pid: "server", **{p.pid: "encoders" for p in below}}
        data = out / "perf.data"
        print(perf_breakdown(data, roles, frames_in_window) if data.exists() else "no perf data (perf failed?)")
    for name in ("server", "encoder", "client") if not args.perf else ():
        path = out / f"{name}.txt"
        print(summarize(path) if path.exists() else f"== {name}: no profile (py-spy failed?)")
    print(f"\nraw profiles: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
