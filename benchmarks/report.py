"""Results of a run: what each scenario measured, the targets it is held to, and the tables.

A scenario returns a ``ScenarioResult``: named metrics (numbers with units), targets (a metric,
a comparison and a threshold, met or not), series for the plot, and notes (how it was measured,
what held it back). Everything is plain data, written to results.json as is.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


@dataclass
class Metric:
    key: str
    label: str
    value: float
    unit: str = ""
    digits: int = 1

    def text(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "n/a"
        number = f"{self.value:,.{self.digits}f}"
        if self.unit == "x":
            return number + "x"
        return f"{number} {self.unit}".strip()


@dataclass
class Target:
    label: str
    metric: str  # key of the metric it judges
    op: str
    threshold: float
    unit: str = ""
    met: bool | None = None

    def text(self) -> str:
        unit = "x" if self.unit == "x" else f" {self.unit}" if self.unit else ""
        return f"{self.op} {self.threshold:g}{unit}"


@dataclass
class ScenarioResult:
    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the scenario could not run at all
    failures: list[str] = field(default_factory=list)  # parts that failed; the rest was measured
    seconds: float = 0.0

    def add(self, key: str, label: str, value: float, unit: str = "", digits: int = 1) -> float:
        self.metrics.append(Metric(key, label, float(value), unit, digits))
        return float(value)

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    def target(self, label: str, metric: str, op: str, threshold: float, unit: str = "") -> None:
        value = self.metric(metric).value
        met = None if value is None or math.isnan(value) else bool(_OPS[op](value, threshold))
        self.targets.append(Target(label, metric, op, threshold, unit, met))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        fields = dict(data)
        fields["metrics"] = [Metric(**m) for m in data.get("metrics", [])]
        fields["targets"] = [Target(**t) for t in data.get("targets", [])]
        return cls(**fields)


def _status(target: Target | None) -> str:
    if target is None:
        return ""
    return {True: "met", False: "NOT MET", None: "n/a"}[target.met]


def rows(results: list[ScenarioResult]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, metric, value, target, status) rows, one per metric."""
    out = []
    for result in results:
        if result.error:
            out.append((result.name, "ERROR", result.error.splitlines()[-1][:80], "", ""))
            continue
        targets = {t.metric: t for t in result.targets}
        for i, m in enumerate(result.metrics):
            t = targets.get(m.key)
            out.append((result.name if i == 0 else "", m.label, m.text(), t.text() if t else "", _status(t)))
        for failure in result.failures:
            out.append(("", "FAILED", failure.splitlines()[-1][:70], "", ""))
    return out


def text_table(results: list[ScenarioResult]) -> str:
    """A fixed-width table for the terminal."""
    header = ("scenario", "metric", "value", "target", "status")
    body = rows(results)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:{'>' if i == 2 else '<'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in body)])


def markdown_table(results: list[ScenarioResult]) -> str:
    lines = ["| scenario | metric | value | target | status |", "|---|---|--:|---|---|"]
    for r in rows(results):
        status = f"**{r[4]}**" if r[4] == "NOT MET" else r[4]
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {status} |")
    return "\n".join(lines)


def targets_summary(results: list[ScenarioResult]) -> str:
    """One line per target: met or not, with the value."""
    lines = []
    for result in results:
        for t in result.targets:
            value = result.metric(t.metric).text()
            lines.append(f"  [{_status(t):^7}] {result.name}: {t.label}: {value} (target {t.text()})")
    return "\n".join(lines)
