"""Where the time goes: py-spy profiles of the server, one encoder process and the client.

    python -m benchmarks.profile e2e            720p ultrafast, 1-frame chunks, server file
    python -m benchmarks.profile transport      720p raw chunks into Discard(encode=False)
    python -m benchmarks.profile concurrency    N real-time 640x360 sessions (--sessions)

py-spy samples each process 100 times a second while the workload runs (``--native`` adds C
frames, numpy's and FFmpeg's, at the cost of stopping the process for every sample), then this
prints, per process, the share of samples per thread, the functions samples ended in (self) and
the functions on the stack (inclusive). Raw profiles are left in benchmarks/results/profile-*/
(flamegraph input: ``flamegraph.pl < server.txt``). py-spy needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).
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

import framecast

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
    out += ["  inclusive:"] + [f"    {v / total:6.1%}  {k}" for k, v in useful[:top * 2]]
    return "\n".join(out)


def _write_frames(writer: framecast.StreamWriter, frames, stop: threading.Event, rate: int | None) -> None:
    start, i = time.perf_counter(), 0
    while not stop.is_set():
        if rate:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        k = i % len(frames)
        writer.write_video_chunk(0, frames[k : k + 1])
        i += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=["e2e", "transport", "concurrency"])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--sessions", type=int, default=6, help="concurrency: sessions at once")
    p.add_argument("--native", action="store_true", help="include C frames (stops the process per sample)")
    args = p.parse_args(argv)
    out = HERE / "results" / f"profile-{args.workload}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    with BenchServer() as server:
        if args.workload == "concurrency":
            frames = moving_frames(60, 360, 640)
            writers = [video_writer(framecast.Discard(encode=True), server.url, (640, 360), 30, LIVE, realtime=True)
                       for _ in range(args.sessions)]
            rate: int | None = 30
        else:
            frames = moving_frames(64, 720, 1280)
            if args.workload == "e2e":
                dst = framecast.ServerFile("profile.mp4", crash_safe=False)
                writers = [video_writer(dst, server.url, (1280, 720), 30, ULTRAFAST)]
            else:
                writers = [video_writer(framecast.Discard(encode=False), server.url, (1280, 720), 30, None,
                                        encoder=None)]
            rate = None
        for w in writers:
            w.open()
        stop = threading.Event()
        threads = [threading.Thread(target=_write_frames, args=(w, frames, stop, rate)) for w in writers]
        for t in threads:
            t.start()
        time.sleep(1.0)  # past the start
        # An encoder process: a grandchild of the server (under its forkserver). Not through
        # GET /v1/sessions/{id}: asking about a session makes its encoder render previews.
        encoder = next(p.pid for p in server.process.children(recursive=True) if p.ppid() != server.process.pid)
        spies = [
            _spy(server.process.pid, out / "server.txt", args.seconds, args.native),
            _spy(encoder, out / "encoder.txt", args.seconds, args.native),
            _spy(os.getpid(), out / "client.txt", args.seconds, False),  # itself: never --native
        ]
        for spy in spies:
            spy.wait()
        stop.set()
        for t in threads:
            t.join(30)
        for w in writers:
            w.close()
    for name in ("server", "encoder", "client"):
        path = out / f"{name}.txt"
        print(summarize(path) if path.exists() else f"== {name}: no profile (py-spy failed?)")
    print(f"\nraw profiles: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
