"""``anmin rules``: check rule files, and test them over a recorded replay."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anmin.common import console, errors

if TYPE_CHECKING:
    from rules.scoring import Score
    from rules.transition import Transition

app = typer.Typer(
    help="Rule files: check them, and test them over a recorded replay.", no_args_is_help=True
)


@app.command("check")
def rules_check(
    files: Annotated[list[Path], typer.Argument(help="Rule files (YAML) to check.")],
) -> None:
    """Check rule files strictly and say in words what each rule does. Unknown keys, wrong
    units and impossible thresholds are reported with file and line. Exits 1 if any is wrong."""
    from rules import ConfigError, EngineError, load_rules
    from rules import summary as summarise

    failed = 0
    for path in files:
        try:
            ruleset = load_rules(path)
            rules = ruleset.resolved()
        except (ConfigError, EngineError) as exc:
            errors.print(f"[red]error:[/] {exc}")
            failed += 1
            continue
        if not ruleset.rules and not ruleset.include:
            gas = ruleset.gas
            console.print(
                f"[green]ok[/] {path}: gas low {gas.low} / high {gas.high} %LEL, "
                f"clear below {gas.clear_below}"
            )
        else:
            console.print(f"[green]ok[/] {path}: {len(rules)} rules", highlight=False)
        for rule in rules:
            for line in summarise.rule(rule):
                console.print(line, markup=False, highlight=False)
    raise typer.Exit(1 if failed else 0)


@app.command("test")
def rules_test(
    path: Annotated[Path, typer.Argument(help="The rule file (YAML).")],
    replay: Annotated[Path, typer.Option(help="A replay (JSON Lines) from the simulator.")],
    truth: Annotated[
        Path | None, typer.Option(help="Its ground truth (JSON), to score the alerts.")
    ] = None,
    tick: Annotated[float, typer.Option(help="Seconds of replay time between ticks.")] = 10.0,
) -> None:
    """Run the rules over a replay and print the alert timeline; with --truth, a table of
    detected / missed / false alerts and delays per incident kind. Exits 1 if a life-safety
    incident is missed or a life-safety alarm is false."""
    import msgspec
    from rich.progress import Progress

    from rules import ConfigError, EngineError, load_rules
    from rules.replay import run_replay
    from rules.scoring import score
    from wire.replay import GroundTruth, ReplayHeader, ReplayRecord, decode_lines

    try:
        ruleset = load_rules(path)
        lines = decode_lines(replay.read_bytes())
        expected = msgspec.json.decode(truth.read_bytes(), type=GroundTruth) if truth else None
    except (ConfigError, EngineError) as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except (OSError, msgspec.DecodeError) as exc:
        errors.print(f"[red]error:[/] cannot read the replay or its truth: {exc}")
        raise typer.Exit(2) from exc
    if not lines or not isinstance(lines[0], ReplayHeader):
        errors.print(f"[red]error:[/] {replay}: the first line must be the replay header")
        raise typer.Exit(2)
    header = lines[0]
    records = [line for line in lines[1:] if isinstance(line, ReplayRecord)]
    with Progress(console=errors, transient=True, disable=len(records) < 20000) as bar:
        task = bar.add_task("replaying", total=len(records))
        try:
            result = run_replay(
                ruleset,
                header,
                records,
                tick_s=tick,
                progress=lambda n: bar.update(task, completed=n),
            )
        except EngineError as exc:
            errors.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
    _timeline(result.transitions, header.start)
    console.print(
        f"{result.readings} readings from {len(header.devices)} devices, "
        f"{len(result.transitions)} alert changes",
        highlight=False,
    )
    for device, count in sorted(result.unknown_devices.items()):
        errors.print(f"[yellow]warning:[/] {count} readings from {device}, not in the header")
    if expected is None:
        raise typer.Exit(0)
    scored = score(result.transitions, expected)
    _score_table(scored)
    raise typer.Exit(0 if scored.life_safety_ok else 1)


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"+{hours:d}:{rest // 60:02d}:{rest % 60:02d}"


def _timeline(transitions: list[Transition], start: datetime) -> None:
    from rich.table import Table

    table = Table(title="alert timeline", show_lines=False)
    for column in ("time", "since start", "phase", "severity", "kind", "where", "message"):
        table.add_column(column)
    for t in transitions:
        table.add_row(
            t.at.isoformat(timespec="seconds"),
            _clock((t.at - start).total_seconds()),
            t.phase.value,
            t.severity.value,
            t.kind,
            t.key,
            t.message,
        )
    console.print(table)


def _score_table(scored: Score) -> None:
    from rich.table import Table

    table = Table(title="against ground truth")
    for column in ("kind", "life safety", "incidents", "detected", "missed", "false"):
        table.add_column(column, justify="right" if column != "kind" else "left")
    table.add_column("median delay", justify="right")
    table.add_column("max delay", justify="right")
    for kind in sorted(scored.kinds):
        row = scored.kinds[kind]
        median, worst = row.median_delay_s, row.max_delay_s
        table.add_row(
            kind,
            "yes" if row.life_safety else "",
            str(row.incidents),
            f"{row.detected}/{row.expected}",
            f"[red]{row.missed}[/]" if row.missed else "0",
            f"[red]{row.false}[/]" if row.false else "0",
            f"{median:.0f} s" if median is not None else "-",
            f"{worst:.0f} s" if worst is not None else "-",
        )
    console.print(table)
    for incident, expect in scored.missed:
        place = expect.device or expect.unit or expect.building or ""
        console.print(f"missed: {incident}: {expect.kind} {expect.severity} at {place}")
    for alert in scored.false:
        console.print(
            f"false: {alert.at.isoformat(timespec='seconds')} {alert.kind} "
            f"{alert.severity} at {alert.key}",
            highlight=False,
        )
    verdict = "[green]ok[/]" if scored.life_safety_ok else "[red]FAILED[/]"
    console.print(f"life safety: {verdict} (every incident detected, no false alarm)")
