"""``anmin rules``: Rule files: check them before a gateway loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anmin.common import console, errors

app = typer.Typer(help="Rule files: check them before a gateway loads them.", no_args_is_help=True)


@app.command("check")
def rules_check(
    files: Annotated[list[Path], typer.Argument(help="Rule files (YAML) to check.")],
) -> None:
    """Check rule files strictly: unknown keys, wrong types and impossible thresholds are
    reported with file and line. Exits 1 if any file is wrong."""
    from rules import ConfigError, load_rules

    failed = 0
    for path in files:
        try:
            ruleset = load_rules(path)
        except ConfigError as exc:
            errors.print(f"[red]error:[/] {exc}")
            failed += 1
            continue
        gas = ruleset.gas
        console.print(
            f"[green]ok[/] {path}: gas low {gas.low} / high {gas.high} %LEL, "
            f"clear below {gas.clear_below}"
        )
    raise typer.Exit(1 if failed else 0)
