"""``python -m benchmarks``: run every scenario, print the table, write results and the plot.

    python -m benchmarks                      the full suite (about 15 minutes: the memory soak is 10)
    python -m benchmarks --quick              every scenario at toy sizes, under a minute (a smoke run)
    python -m benchmarks --only e2e,latency   some scenarios
    python -m benchmarks --memory-seconds 120 --drift-seconds 30
    python -m benchmarks --publish            also copy the plot and results to benchmarks/latest.*

Results go to benchmarks/results/<time>-<full|quick>/ (results.json, table.txt, table.md,
plot.png); --out picks another directory. The exit status is 1 if a scenario failed to run (a
target that is not met is a result, not a failure).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import plot, report
from .measure import BackgroundLoad, busy_cores_sample
from .scenarios import ALL
from .settings import FULL, QUICK, Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    import av
    import numpy

    from .baselines import ffmpeg_version

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    libs = av.library_versions
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", "?"),
        "libavcodec": ".".join(map(str, libs.get("libavcodec", ()))),
        "ffmpeg_cli": ffmpeg_version(),
        "numpy": numpy.__version__,
        "commit": git("rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(git("status", "--porcelain", "--", "client", "service")),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.NAME for s in ALL]
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="toy sizes and durations (a smoke run, < 60 s)")
    p.add_argument("--only", default=",".join(names), help=f"comma-separated scenarios (default: all of {names})")
    p.add_argument("--memory-seconds", type=float, help="length of the memory soak (full: 600)")
    p.add_argument("--drift-seconds", type=float, help="length of the drift stream (full: 60)")
    p.add_argument("--out", type=Path, help="results directory (default: benchmarks/results/<time>-<mode>)")
    p.add_argument("--publish", action="store_true", help="copy plot.png and results.json to benchmarks/latest.*")
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="scenarios measured while other processes were busy "
        "are measured again, this many times at most, keeping the quietest (full run only)",
    )
    p.add_argument(
        "--settle",
        type=float,
        help="wait up to this many seconds for an idle machine before each "
        "scenario (default: 600 for the full run, 0 for --quick)",
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(names)
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {names}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL
    if args.memory_seconds is not None:
        settings = dataclasses.replace(settings, memory_seconds=args.memory_seconds)
    if args.drift_seconds is not None:
        settings = dataclasses.replace(settings, drift_seconds=args.drift_seconds)
    return settings


#: Other processes' CPU (cores) above which a scenario's numbers are suspect.
BUSY = 0.3


def wait_quiet(limit: float, quiet_samples: int = 3) -> float:
    """Wait (at most ``limit`` s) until the machine is idle: under BUSY cores for 3 samples of 2 s.

    Other work on the machine (a test run, a build) skews every number here. Returns the busy cores
    of the last sample.
    """
    deadline = time.monotonic() + limit
    quiet = 0
    while True:
        busy = busy_cores_sample(2.0)
        quiet = quiet + 1 if busy < BUSY else 0
        if quiet >= quiet_samples or time.monotonic() >= deadline:
            return busy
        if not quiet:
            print(f"   machine busy ({busy:.2f} cores from other processes); waiting for it to settle", flush=True)


def _background(result: report.ScenarioResult) -> float:
    try:
        return result.metric("background").value
    except KeyError:
        return float("inf")


def run_scenario(module: Any, settings: Settings, workdir: Path) -> report.ScenarioResult:
    """Run one scenario; an exception becomes a result with ``error`` set.

    The CPU other processes used meanwhile is added as the metric ``background``.
    """
    t0 = time.perf_counter()
    load = BackgroundLoad()
    try:
        result = module.run(settings, workdir)
    except Exception:
        result = report.ScenarioResult(module.NAME, module.TITLE, error=traceback.format_exc())
    result.seconds = time.perf_counter() - t0
    if not result.error:
        result.add("background", "other processes' CPU meanwhile", load.cores(), "cores", 2)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server a scenario started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = settings_from(args)
    mode = "quick" if settings.quick else "full"
    out = args.out or HERE / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(
        f"framecast benchmarks ({mode}) on {info['nproc']} x {info['cpu']}, Python {info['python']}, "
        f"PyAV {info['pyav']} (FFmpeg {info['pyav_ffmpeg']}), ffmpeg CLI {info['ffmpeg_cli']}",
        flush=True,
    )

    selected = [s for s in ALL if s.NAME in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="framecast-bench-work-") as work:
        for module in selected:
            settle = args.settle if args.settle is not None else (0 if settings.quick else 600)
            result = None
            retries = args.retries if settle > 0 and getattr(module, "RETRY_WHEN_BUSY", True) else 0
            for _attempt in range(1 + retries):
                if settle > 0:
                    wait_quiet(settle)
                print(f"-- {module.NAME}: {module.TITLE} ...", flush=True)
                tried = run_scenario(module, settings, Path(work))
                if result is None or _background(tried) < _background(result):
                    result = tried
                if _background(result) < BUSY:
                    break
                print(f"   other processes used {_background(tried):.2f} cores meanwhile: measuring again", flush=True)
            results.append(result)
            for problem in [result.error, *result.failures]:
                if problem:
                    print(problem, file=sys.stderr, flush=True)
            print(report.text_table([result]) + f"\n   ({result.seconds:.0f} s)\n", flush=True)

    table = report.text_table(results)
    end = machine()
    if (end["commit"], end["tree_dirty"]) != (info["commit"], info["tree_dirty"]) or info["tree_dirty"]:
        # Each scenario's server imports the code as it is when that scenario starts.
        print(
            f"note: the code changed during the run or has local changes (commit {info['commit']} -> "
            f"{end['commit']}, local changes: {info['tree_dirty']} -> {end['tree_dirty']})",
            flush=True,
        )
    info["commit_at_end"], info["tree_dirty_at_end"] = end["commit"], end["tree_dirty"]
    payload = {
        "mode": mode,
        "machine": info,
        "settings": dataclasses.asdict(settings),
        "results": [r.to_json() for r in results],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=float))
    (out / "table.txt").write_text(table + "\n")
    (out / "table.md").write_text(report.markdown_table(results) + "\n")
    title = (
        f"framecast benchmarks ({mode}, {info['date']}, commit {info['commit']}"
        f"{' + local changes' if info['tree_dirty'] else ''}): {info['nproc']} x {info['cpu']}"
    )
    plot.draw(results, out / "plot.png", title)
    if args.publish:
        shutil.copy(out / "plot.png", HERE / "latest.png")
        shutil.copy(out / "results.json", HERE / "latest.json")
        shutil.copy(out / "table.md", HERE / "latest.md")

    print("== results ==")
    print(table)
    print("\n== targets ==")
    print(report.targets_summary(results))
    print(f"\nwritten: {out}/results.json, table.txt, table.md, plot.png")
    failed = [r.name for r in results if r.error or r.failures]
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
