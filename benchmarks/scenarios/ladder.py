"""4c. An HLS ladder (issue 16): what each rung costs.

One real-time session writing a live HLS stream of 1280x720 rgb24 at 30 fps (the moving pattern)
plus 48 kHz stereo, libx264 with the live settings spelled out + AAC, in three cases side by side
in one run: the stream alone (one rendition, 720p: the session's own encoder), a ladder of 720p +
360p, and 720p + 360p + 180p. Each rung is one more libx264 encode of the frames scaled by
swscale to its size; the audio is encoded once whatever the ladder. The CPU counted is the server's
(main process and the session's encoder process), per second of media, as in the fan-out scenario
(``fanout._case``); a rung's cost is the difference between the cases it separates.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import framecast

from ..measure import median
from ..media import moving_frames, tone
from ..report import ScenarioResult
from ..server import BenchServer
from ..settings import Settings
from .fanout import DISTINCT_FRAMES, _case

NAME = "ladder"
TITLE = "HLS ladder: the cost of each rung"

CASES = ("one", "two", "three")
#: Three rungs (each half the height of the one above) against one rendition: their pixels are 1.31x.
TARGET_RATIO = 1.5


def _rungs(height: int, count: int) -> list[dict[str, Any]]:
    """``count`` rungs from ``height`` down, halving: 720, 360, 180."""
    return [{"height": height // (2**k) - (height // (2**k)) % 2} for k in range(count)]


def run(settings: Settings, workdir: Path) -> ScenarioResult:
    result = ScenarioResult(NAME, TITLE)
    width, height = settings.fanout_size
    rate, sample_rate = settings.frame_rate, settings.sample_rate
    seconds = settings.fanout_seconds
    frames = moving_frames(DISTINCT_FRAMES, height, width, "tchw")
    audio = tone(1 / rate, sample_rate)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="framecast-ladder-", dir=workdir), BenchServer() as server:

        def measure(case: str, tag: str, media_seconds: float) -> dict[str, Any]:
            count = CASES.index(case) + 1
            dst = framecast.ServerFile(
                f"ladder-{tag}/show.m3u8",
                playlist_type="event",
                overwrite=True,
                renditions=_rungs(height, count) if count > 1 else None,
            )
            return _case(server, [dst], [], frames, audio, rate, sample_rate, media_seconds)

        measure("three", "warm", min(seconds, 2.0))  # unmeasured: the forkserver, x264's code and tables
        for r in range(settings.fanout_rounds):
            for k in range(len(CASES)):
                case = CASES[(k + r) % len(CASES)]
                runs[case].append(measure(case, f"r{r}-{case}", seconds))

    cpu = {case: median(m["cores"] for m in runs[case]) for case in CASES}
    heights = [f"{rung['height']}p" for rung in _rungs(height, 3)]
    labels = {
        "one": f"HLS, 1 rendition ({heights[0]})",
        "two": f"HLS ladder {' + '.join(heights[:2])}",
        "three": f"HLS ladder {' + '.join(heights)}",
    }
    for case in CASES:
        result.add(f"cpu_{case}", f"{labels[case]}: server CPU s / media s", cpu[case], "s/s", 3)
    result.add("rung_2", f"the {heights[1]} rung (two - one)", cpu["two"] - cpu["one"], "s/s", 3)
    result.add("rung_3", f"the {heights[2]} rung (three - two)", cpu["three"] - cpu["two"], "s/s", 3)
    result.add(
        "rung_2_share",
        f"the {heights[1]} rung, share of the {heights[0]} stream",
        (cpu["two"] - cpu["one"]) / cpu["one"] * 100,
        "%",
        0,
    )
    result.add("ratio_three_one", "3 rungs / 1 rendition (CPU)", cpu["three"] / cpu["one"], "x", 2)
    for case in CASES:
        worst = max(m["max_lateness_ms"] for m in runs[case])
        result.add(f"lateness_{case}", f"{case}: worst pacing max_lateness", worst, "ms", 0)
    # The rungs' pixels are 1 + 1/4 + 1/16 of the top's: a ladder costing well past that (1.5x)
    # would be spending on something else than the encodes (a copy per rung, a stall).
    result.target(f"3 rungs < {TARGET_RATIO}x the CPU of 1 rendition", "ratio_three_one", "<", TARGET_RATIO, "x")
    result.series = {"runs": runs, "cpu": cpu, "heights": heights}
    result.notes.append(
        f"{width}x{height}@{rate} rgb24 + {sample_rate} Hz stereo, HLS (fMP4, 2 s segments), libx264 + AAC, "
        f"real time, {seconds:g} s per case, median of {settings.fanout_rounds} rounds; CPU of the server's main "
        "process and the session's encoder process per media second."
    )
    return result
