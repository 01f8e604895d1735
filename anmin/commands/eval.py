"""``anmin eval``: anomaly detectors, through the pump rule, over the simulator's labelled
scenarios and (with ``--skab DIR``) the SKAB recordings; NAB scores, F1, false and missed alarm
rates, a report folder with plots. docs/detection.md has the results and how to reproduce them.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from anmin.common import console, errors

if TYPE_CHECKING:
    from anmin.evaluation.report import Summary
    from anmin.evaluation.series import Outcome, Series
    from rules.language import Rule

app = typer.Typer(help="Measure the anomaly detectors on labelled data.")


def _shipped_scenarios() -> list[Path]:
    import firmware_sim

    folder = Path(firmware_sim.__file__).resolve().parent.parent / "scenarios"
    return sorted(folder.glob("*.yaml"))


@app.callback(invoke_without_command=True)
def evaluate(
    scenario: Annotated[
        list[Path] | None,
        typer.Option(help="A simulator scenario (repeat; default: the shipped ones)."),
    ] = None,
    skab: Annotated[
        Path | None,
        typer.Option(help="SKAB's data folder (e.g. ../shared/data/skab); default: none."),
    ] = None,
    sim: Annotated[bool, typer.Option(help="Evaluate on the simulator's scenarios.")] = True,
    detector: Annotated[
        list[str] | None,
        typer.Option(help="A registered detector to try in the rule (repeat; default: pump)."),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(help="A rule file whose score rule is used (default: the pump preset)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Simulate only this many seconds of each scenario.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed (default: the file's).")] = None,
    out: Annotated[Path, typer.Option(help="The report folder.")] = Path("eval-report"),
    plots: Annotated[bool, typer.Option(help="Draw a PNG per series.")] = True,
) -> None:
    """Run detectors through the pump rule over labelled series and write a report. Exits 1 if
    a simulated non-life-safety anomaly incident is missed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from anmin.evaluation import report
    from anmin.evaluation import series as evaluation
    from anmin.evaluation import sim as simulated
    from anmin.evaluation import skab as benchmark
    from rules import ConfigError, load_preset, load_rules
    from rules.detectors import DETECTORS
    from rules.ruleset import preset_names

    names = detector or ["pump"]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        errors.print(
            f"[red]error:[/] no detector named {', '.join(unknown)}; "
            f"registered: {', '.join(sorted(DETECTORS))}"
        )
        raise typer.Exit(2)
    try:
        ruleset = load_rules(rules) if rules else load_preset("pump")
        rule = evaluation.scored_rule(ruleset.resolved())
    except (ConfigError, ValueError) as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    all_series: list[Series] = []
    incident_rows: list[dict[str, Any]] = []
    missed = 0
    if sim:
        # Every preset's rules; where two presets define one id (the CO standards), the first.
        every: dict[str, Rule] = {}
        for preset in preset_names():
            for each in load_preset(preset).resolved():
                every.setdefault(each.id, each)
        for path in scenario or _shipped_scenarios():
            with console.status(f"recording {path.name} on the simulated clock"):
                recording = simulated.record(path, seed=seed, duration_s=duration)
                scored = simulated.score_rules(recording, list(every.values()))
            for kind, row in sorted(scored.kinds.items()):
                if not row.incidents:
                    continue
                incident_rows.append(
                    {
                        "scenario": recording.header.scenario,
                        "kind": kind,
                        "life_safety": row.life_safety,
                        "expected": row.expected,
                        "detected": row.detected,
                        "missed": row.missed,
                        "false": row.false,
                        "median_delay_s": None
                        if row.median_delay_s is None
                        else round(row.median_delay_s, 1),
                    }
                )
                if not row.life_safety:
                    missed += row.missed
            all_series += simulated.series(recording, rule.devices.kinds or ["pump"])
    if skab is not None:
        found = benchmark.files(skab)
        if not found:
            errors.print(f"[red]error:[/] no SKAB CSV files under {skab}")
            raise typer.Exit(2)
        root = found[0].parent.parent
        all_series += [benchmark.load(p, root) for p in found]
        all_series += [benchmark.load(p, root) for p in benchmark.files(skab, anomaly_free=True)]

    out.mkdir(parents=True, exist_ok=True)
    if plots:
        (out / "plots").mkdir(exist_ok=True)
    threshold = _threshold(rule)
    outcomes: dict[tuple[str, str], list[Outcome]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("detectors over series", total=len(all_series) * len(names))
        for name in names:
            for item in all_series:
                bar.update(task, description=f"{name}: {item.name}")
                outcome = evaluation.run(item, rule, name)
                outcomes.setdefault((name, item.source), []).append(outcome)
                if plots:
                    file = evaluation.device_id(f"{name}-{item.name}") + ".png"
                    report.plot(outcome, out / "plots" / file, threshold)
                bar.advance(task)
    summaries: list[Summary] = []
    for (name, source), items in outcomes.items():
        labelled = [o for o in items if o.series.group != "anomaly-free"]
        summaries.append(report.summarise(name, source, labelled))
        # SKAB also by split: the tuning files, the held-out ones, the anomaly-free recording.
        for group in ("tuning", "held-out", "anomaly-free"):
            part = [o for o in items if o.series.group == group]
            if part:
                summaries.append(report.summarise(name, f"{source} {group}", part))
    command = "anmin eval " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else [])
    report.write(out, summaries, incident_rows, command.strip())
    _print(summaries, incident_rows)
    console.print(f"report: {out / 'report.md'}", highlight=False)
    raise typer.Exit(1 if missed else 0)


def _threshold(rule: Rule) -> float:
    for _, level in rule.levels():
        cond = level.condition
        for leaf in cond.leaves() if cond is not None else []:
            if leaf.score is not None and leaf.value is not None:
                return leaf.value
    return 0.5


def _print(summaries: list[Summary], incidents: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="detectors through the rule")
    for column in ("detector", "source", "series", "NAB std", "NAB lowFP", "NAB lowFN"):
        table.add_column(column)
    for column in ("F1", "FAR %", "MAR %", "events", "median delay"):
        table.add_column(column, justify="right")
    for s in summaries:
        r = s.row()
        delay = r["median_delay_s"]
        table.add_row(
            s.detector,
            s.source,
            str(s.series),
            f"{r['nab_standard']:.1f}",
            f"{r['nab_reward_low_FP']:.1f}",
            f"{r['nab_reward_low_FN']:.1f}",
            f"{r['f1']:.3f}",
            f"{r['far_pct']:.1f}",
            f"{r['mar_pct']:.1f}",
            str(r["events_detected"]),
            "-" if delay is None else f"{delay:.0f} s",
        )
    console.print(table)
    if incidents:
        table = Table(title="simulator incidents, every preset")
        for column in ("scenario", "kind", "life safety", "detected", "missed", "false", "delay"):
            table.add_column(column)
        for r in incidents:
            delay = r["median_delay_s"]
            table.add_row(
                r["scenario"],
                r["kind"],
                "yes" if r["life_safety"] else "",
                f"{r['detected']}/{r['expected']}",
                str(r["missed"]),
                str(r["false"]),
                "-" if delay is None else f"{delay:.0f} s",
            )
        console.print(table)
