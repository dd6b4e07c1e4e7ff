"""The PNG: one panel per scenario, drawn from the results' series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .report import ScenarioResult  # noqa: E402


def _e2e(ax: Any, r: ScenarioResult) -> None:
    fps = r.series["fps"]
    cases = [
        ("server_file", "framecast\nserver file", "C0"),
        ("websocket", "framecast\nwebsocket", "C9"),
        ("websocket_rgb", "websocket\nRGB", "C9"),
        ("local_file", "framecast\nlocal file", "C0"),
        ("encoder", "encoder\nalone", "C7"),
        ("pipelined", "PyAV +\nconv. thread", "C2"),
        ("pyav_websocket", "websockets\n+ PyAV", "C2"),
        ("pyav", "PyAV\nin-process", "C2"),
        ("ffmpeg", "ffmpeg\npipe", "C1"),
    ]
    cases = [c for c in cases if c[0] in fps or c[0] in ("server_file", "local_file", "pyav", "ffmpeg")]
    values = [fps.get(key, float("nan")) for key, _, _ in cases]
    values = [0.0 if v != v else v for v in values]  # NaN: that contender failed
    bars = ax.bar([label for _, label, _ in cases], values, color=[color for _, _, color in cases])
    ax.bar_label(bars, labels=[f"{v:.0f}" if v else "failed" for v in values], fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.axhline(0.9 * fps["pyav"], color="C2", ls="--", lw=1, label="0.9 x PyAV")
    if "encoder" in fps:
        ax.axhline(0.85 * fps["encoder"], color="C7", ls=":", lw=1, label="0.85 x the encoder alone")
        ax.axhline(0.7 * fps["encoder"], color="C9", ls=":", lw=1, label="0.7 x (over the websocket)")
    ax.set_ylabel("frames / s")
    ax.legend(loc="lower right", fontsize=8)


def _transport(ax: Any, r: ScenarioResult) -> None:
    labels, values = [], []
    for key, runs in r.series["runs"].items():
        mode, _, chunk = key.partition(":")
        labels.append(f"{chunk}-frame\n{'shared mem' if mode == 'shared' else 'websocket'}")
        values.append(float(np.median([m["gbps"] for m in runs])))
    labels.append("plain TCP\n(ceiling)")
    values.append(float(np.median(r.series["tcp"])))
    bars = ax.bar(labels, values, color=["C0"] * (len(values) - 1) + ["C7"])
    ax.bar_label(bars, fmt="%.2f")
    ax.axhline(1.0, color="C3", ls="--", lw=1, label="target 1 GB/s")
    ax.set_yscale("log")
    ax.set_ylabel("GB/s")
    ax.legend(loc="upper left", fontsize=8)


def _cdf(ax: Any, values: list[float], label: str, color: str) -> None:
    if values:
        data = np.sort(values)
        ax.plot(data, np.arange(1, len(data) + 1) / len(data), label=label, color=color)


def _latency(ax: Any, r: ScenarioResult) -> None:
    _cdf(ax, r.series["ack_ms"], "framecast ACK latency", "C0")
    _cdf(ax, r.series["round_trip_ms"], "framecast write+flush", "C9")
    _cdf(ax, r.series["floor_ms"], "PyAV in-process", "C2")
    _cdf(ax, r.series.get("websocket_ms", []), "framecast ACK, payloads over the websocket", "C8")
    _cdf(ax, r.series.get("unpaced_ms", []), "framecast, not paced", "C4")
    _cdf(ax, r.series.get("transport_ms", []), "framecast, transport alone", "C7")
    for x, name in ((15, "p50 target"), (40, "p99 target")):
        ax.axvline(x, color="C3", ls="--", lw=1)
        ax.text(x, 0.02, name, rotation=90, fontsize=7, color="C3", ha="right", va="bottom")
    ax.set_xlim(0, max([45.0] + [1.05 * max(v) for v in r.series.values() if isinstance(v, list) and v]))
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of frames")
    ax.legend(loc="lower right", fontsize=8)


def _deciding(levels: list[dict]) -> list[dict]:
    """One level per count, the last run (a failed level is run once more), in count order."""
    return sorted({lv["sessions"]: lv for lv in levels}.values(), key=lambda lv: lv["sessions"])


def _concurrency(ax: Any, r: ScenarioResult) -> None:
    levels = _deciding(r.series["levels"])
    n = [lv["sessions"] for lv in levels]
    floor = 1.0  # log scale: sub-millisecond values sit on the floor
    ax.plot(n, [max(floor, lv["p99_ms"]) for lv in levels], "o-", label="worst p99 ACK latency")
    ax.plot(n, [max(floor, lv["max_lateness_ms"]) for lv in levels], "s-", label="worst pacing max_lateness")
    pyav = r.series.get("pyav_levels") or []
    if pyav:
        pyav = _deciding(pyav)
        ax.plot(
            [lv["sessions"] for lv in pyav],
            [max(floor, lv["p99_ms"]) for lv in pyav],
            "^--",
            color="C4",
            label="live PyAV processes: worst p99",
        )
    failed = [lv["sessions"] for lv in levels if not lv["passed"]]
    if failed:
        ax.plot(failed, [floor] * len(failed), "x", color="C3", ms=10, label="level failed")
    pyav_failed = [lv["sessions"] for lv in pyav if not lv["passed"]]
    if pyav_failed:
        ax.plot(pyav_failed, [floor] * len(pyav_failed), "x", color="C4", ms=10, label="live PyAV level failed")
    ax.axhline(100, color="C3", ls="--", lw=1, label="limit 100 ms")
    ax.axvline(r.series["bound"], color="C2", ls=":", lw=1.5, label=f"encode bound {r.series['bound']:.1f}")
    ax.axvline(0.8 * r.series["bound"], color="C2", ls="--", lw=1, label="80% of bound (target)")
    ax.set_yscale("log")
    ax.set_xlim(0, max(r.series["bound"], max(n, default=1)) * 1.05)
    ax.set_xlabel("real-time sessions at once")
    ax.set_ylabel("ms")
    ax.legend(loc="center right", fontsize=7)


def _fanout(ax: Any, r: ScenarioResult) -> None:
    runs = r.series["runs"]
    labels = {"one": "1 session\n1 output", "three": "1 session\n3 outputs", "separate": "3 sessions\n1 output each"}
    cases = [c for c in labels if runs.get(c)]
    server = [float(np.median([m["server"] for m in runs[c]])) for c in cases]
    encoders = [float(np.median([m["encoders"] for m in runs[c]])) for c in cases]
    x = [labels[c] for c in cases]
    ax.bar(x, encoders, color="C0", label="encoder processes")
    bars = ax.bar(x, server, bottom=encoders, color="C9", label="server main process")
    ax.bar_label(bars, labels=[f"{r.series['cpu'][c]:.2f}" for c in cases])
    if "one" in r.series["cpu"]:
        limit = r.series["target"] * r.series["cpu"]["one"]
        ax.axhline(limit, color="C3", ls="--", lw=1, label=f"{r.series['target']:g} x 1 output (target)")
    ax.set_ylabel("server CPU s per media s")
    ax.legend(loc="upper left", fontsize=8)


def _ladder(ax: Any, r: ScenarioResult) -> None:
    cpu = r.series["cpu"]
    top, second, third = r.series["heights"]
    labels = {"one": f"1 rendition\n{top}", "two": f"+ {second}", "three": f"+ {second}\n+ {third}"}
    cases = [c for c in labels if c in cpu]
    bars = ax.bar([labels[c] for c in cases], [cpu[c] for c in cases], color="C0")
    ax.bar_label(bars, labels=[f"{cpu[c]:.2f}" for c in cases])
    ax.set_ylabel("server CPU s per media s")


def _shaped(ax: Any, r: ScenarioResult) -> None:
    cases = [("yuv420p", "yuv420p on the wire"), ("rgb24", "RGB on the wire")]
    p50 = [r.metric(f"{wire}_p50").value for wire, _ in cases]
    p99 = [r.metric(f"{wire}_p99").value for wire, _ in cases]
    x = np.arange(len(cases))
    ax.bar(x - 0.2, p50, 0.4, label="ACK p50", color="C0")
    bars = ax.bar(x + 0.2, p99, 0.4, label="ACK p99", color="C1")
    ax.bar_label(bars, labels=[f"{v:,.0f} ms" for v in p99], fontsize=8)
    ax.axhline(200, color="C3", ls="--", lw=1, label="p99 target 200 ms")
    ax.set_xticks(x, [label for _, label in cases])
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left", fontsize=8)


def _compression(ax: Any, r: ScenarioResult) -> None:
    kinds = [("rendered", "rendered"), ("camera", "camera-like"), ("noisy", "camera + noise")]
    ratios = [r.metric(f"{kind}_ratio").value for kind, _ in kinds]
    bars = ax.bar([label for _, label in kinds], ratios, color="C0")
    client = [r.metric(f"{kind}_client_ms").value for kind, _ in kinds]
    ax.bar_label(bars, labels=[f"{x:.1f}x\n{ms:.1f} ms" for x, ms in zip(ratios, client)], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=max(ratios) * 4)
    ax.set_ylabel("raw / sent (client ms a frame)")


def _memory(ax: Any, r: ScenarioResult) -> None:
    long = np.array(r.series["long"], dtype=np.float64)
    if long.size:
        ax.plot(long[:, 0], long[:, 1] / 1e6, label="RSS (sum over tree)")
        ax.plot(long[:, 0], long[:, 2] / 1e6, label="PSS (sum over tree)")
        ax.axvline(r.series["warmup"], color="C7", ls=":", lw=1, label="end of warm-up")
    ax.set_xlabel("seconds into the stream")
    ax.set_ylabel("MB")
    ax.legend(loc="center right", fontsize=8)
    per = r.metric("per_session_rss").text()
    ax.set_title(f"{ax.get_title()}\n(+{per} RSS per extra session)", fontsize=9)


def _drift(ax: Any, r: ScenarioResult) -> None:
    ax.plot(r.series["t"], r.series["drift_ms"], lw=1)
    ax.axhspan(-50, 50, color="C2", alpha=0.1, label="target |drift| < 50 ms")
    ax.set_xlabel("media seconds")
    ax.set_ylabel("wall - media (ms)")
    ax.legend(loc="upper left", fontsize=8)


PANELS = {
    "e2e": _e2e,
    "transport": _transport,
    "latency": _latency,
    "concurrency": _concurrency,
    "fanout": _fanout,
    "ladder": _ladder,
    "shaped": _shaped,
    "compression": _compression,
    "memory": _memory,
    "drift": _drift,
}


def draw(results: list[ScenarioResult], path: Path, title: str) -> None:
    """Draw a panel per scenario that succeeded (a note in place of one that did not)."""
    shown = [r for r in results if r.name in PANELS]
    cols = 3
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(16, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    for ax, r in zip(axes.flat, shown):
        ax.set_title(r.title, fontsize=9)
        if r.error:
            ax.text(0.5, 0.5, f"failed:\n{r.error.splitlines()[-1][:60]}", ha="center", va="center", color="C3")
            ax.axis("off")
            continue
        PANELS[r.name](ax, r)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.plot RESULTS.json [OUT.png]``: draw a saved run again."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m benchmarks.plot RESULTS.json [OUT.png]", file=sys.stderr)
        return 2
    source = Path(args[0])
    payload = json.loads(source.read_text())
    results = [ScenarioResult.from_json(r) for r in payload["results"]]
    info = payload["machine"]
    title = (
        f"framecast benchmarks ({payload['mode']}, {info['date']}, commit {info['commit']}"
        f"{' + local changes' if info['tree_dirty'] else ''}): {info['nproc']} x {info['cpu']}"
    )
    draw(results, Path(args[1]) if len(args) > 1 else source.with_name("plot.png"), title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
