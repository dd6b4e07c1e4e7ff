"""The benchmark suite cannot rot: its quick mode runs end to end and reports every scenario.

This is a smoke run at toy sizes, in a subprocess, exactly as `python -m benchmarks --quick`.
It checks that the table and the plot are produced and that every scenario reported numbers;
it asserts nothing about speed (timings on shared CI machines mean nothing).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from .conftest import ROOT

SCENARIOS = [
    "e2e",
    "transport",
    "latency",
    "concurrency",
    "fanout",
    "ladder",
    "shaped",
    "compression",
    "memory",
    "drift",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, object]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc, out


def test_quick_run_succeeds_and_prints_the_table(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout.split("== results ==", 1)[1]
    for name in SCENARIOS:
        assert f"\n{name} " in table, f"{name} missing from the table:\n{table}"
    assert "== targets ==" in proc.stdout
    assert "ERROR" not in table


def test_every_scenario_reports_numbers(quick_run):
    _, out = quick_run
    payload = json.loads((out / "results.json").read_text())
    assert payload["mode"] == "quick"
    assert payload["machine"]["nproc"] >= 1 and payload["machine"]["pyav"]
    results = {r["name"]: r for r in payload["results"]}
    assert sorted(results) == sorted(SCENARIOS)
    for name, result in results.items():
        assert result["error"] is None, f"{name}: {result['error']}"
        assert result["metrics"], f"{name} reported no metric"
        for metric in result["metrics"]:
            assert isinstance(metric["value"], (int, float)) and math.isfinite(metric["value"]), (name, metric)
        assert result["targets"], f"{name} judged no target"
        for target in result["targets"]:
            assert target["met"] in (True, False), (name, target)


def test_table_files_and_plot_are_written(quick_run):
    _, out = quick_run
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "plot.png").stat().st_size > 20_000
    for name in SCENARIOS:
        assert f"| {name} |" in (out / "table.md").read_text()
        assert name in (out / "table.txt").read_text()


def test_only_and_unknown_scenarios():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "unknown scenario" in proc.stderr
