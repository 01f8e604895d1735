"""``anmin edge``: The gateway's edge agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anmin.common import errors, logging_setup, run_until_interrupted

app = typer.Typer(help="The gateway's edge agent.", no_args_is_help=True)


@app.command("run")
def edgerun_until_interrupted(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's YAML config.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the edge agent of one gateway, as its YAML config describes (see deploy/)."""
    from edge import EdgeAgent, load
    from rules import ConfigError

    logging_setup(verbose)
    try:
        settings = load(config)
    except ConfigError as exc:
        errors.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from exc
    agent = EdgeAgent(settings)
    try:
        run_until_interrupted(agent.run())
    finally:
        agent.close()
