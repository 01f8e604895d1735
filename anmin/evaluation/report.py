"""The report folder: report.md, results.json and a PNG per series (score over time, the
labelled rows, NAB windows and the alert), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anmin.evaluation import nab
from anmin.evaluation.series import Binary, Outcome


@dataclass(slots=True)
class Summary:
    """One detector over one source (sim or skab)."""

    detector: str
    source: str
    series: int = 0
    binary: Binary = field(default_factory=Binary)
    nab: dict[str, float] = field(default_factory=dict)
    delays_s: list[float] = field(default_factory=list)  # first raise after each event

    def row(self) -> dict[str, Any]:
        delays = sorted(self.delays_s)
        return {
            "detector": self.detector,
            "source": self.source,
            "series": self.series,
            **{f"nab_{k}": round(v, 2) for k, v in self.nab.items()},
            "f1": round(self.binary.f1, 3),
            "far_pct": round(100 * self.binary.far, 2),
            "mar_pct": round(100 * self.binary.mar, 2),
            "events_detected": len(delays),
            "median_delay_s": round(delays[len(delays) // 2], 1) if delays else None,
        }


def summarise(detector: str, source: str, outcomes: Sequence[Outcome]) -> Summary:
    summary = Summary(detector, source, series=len(outcomes))
    inputs = []
    for outcome in outcomes:
        summary.binary.add(outcome)
        s = outcome.series
        inputs.append(nab.SeriesInput(len(s.rows), s.events, outcome.raised))
        for event in s.events:
            end = next((k for k in range(event, len(s.labels)) if not s.labels[k]), len(s.labels))
            hit = next((r for r in outcome.raised if event <= r < max(end, event + 1)), None)
            if hit is None and event < len(outcome.alert) and outcome.alert[event]:
                hit = event  # already open when the anomaly began
            if hit is not None:
                summary.delays_s.append((s.times[hit] - s.times[event]).total_seconds())
    summary.nab = {p.name: nab.normalised(inputs, p) for p in nab.PROFILES}
    return summary


def plot(outcome: Outcome, path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = outcome.series
    rows = range(len(s.rows))
    fig, ax = plt.subplots(figsize=(10, 3), dpi=80)
    ax.plot(rows, outcome.scores, lw=0.8, color="#1f5fa8", label=f"score ({outcome.detector})")
    ax.axhline(threshold, color="grey", lw=0.6, ls="--", label="rule threshold")
    for left, right in nab.windows(len(s.rows), s.events):
        ax.axvspan(left, right, color="#f5c242", alpha=0.35, lw=0)
    _spans(ax, s.labels, "#d62728", 0.15, "labelled anomaly")
    _spans(ax, [int(a) for a in outcome.alert], "#2ca02c", 0.25, "alert open", band=(0.0, 0.06))
    if s.scored_from:
        ax.axvline(s.scored_from, color="black", lw=0.6, label="end of training part")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, max(len(s.rows) - 1, 1))
    ax.set_xlabel(f"reading (every {s.interval_s:g} s); yellow: NAB windows")
    ax.set_title(s.name, fontsize=9)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _spans(
    ax: Any,
    flags: Sequence[int],
    colour: str,
    alpha: float,
    label: str,
    band: tuple[float, float] | None = None,
) -> None:
    start = None
    first = True
    for i, flag in enumerate([*flags, 0]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            kw: dict[str, Any] = {"color": colour, "alpha": alpha, "lw": 0}
            if first:
                kw["label"] = label
                first = False
            if band is None:
                ax.axvspan(start, i - 1, **kw)
            else:
                ax.axvspan(start, i - 1, ymin=band[0], ymax=band[1], **kw)
            start = None


def write(out: Path, summaries: Sequence[Summary], sim: list[dict[str, Any]], command: str) -> None:
    rows = [s.row() for s in summaries]
    (out / "results.json").write_text(
        json.dumps({"command": command, "detectors": rows, "simulator_incidents": sim}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    lines = ["# anmin eval", "", f"`{command}`", "", "## Detectors (through the pump rule)", ""]
    head = [
        "detector",
        "source",
        "series",
        "NAB standard",
        "NAB low FP",
        "NAB low FN",
        "F1",
        "FAR %",
        "MAR %",
        "events detected",
        "median delay s",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        values = [
            r["detector"],
            r["source"],
            r["series"],
            r["nab_standard"],
            r["nab_reward_low_FP"],
            r["nab_reward_low_FN"],
            r["f1"],
            r["far_pct"],
            r["mar_pct"],
            r["events_detected"],
            r["median_delay_s"],
        ]
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in values) + " |")
    if sim:
        lines += ["", "## Simulator incidents (every preset's rules)", ""]
        head = ["scenario", "kind", "life safety", "detected", "missed", "false", "median delay s"]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in sim:
            values = [
                r["scenario"],
                r["kind"],
                "yes" if r["life_safety"] else "",
                f"{r['detected']}/{r['expected']}",
                r["missed"],
                r["false"],
                r["median_delay_s"],
            ]
            lines.append("| " + " | ".join("-" if v is None else str(v) for v in values) + " |")
    lines += ["", "Plots: plots/*.png (score, threshold, labelled rows, NAB windows, alert)."]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
