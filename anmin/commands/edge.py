"""``anmin edge``: the gateway's edge agent."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anmin.common import console, errors, logging_setup

if TYPE_CHECKING:
    from edge import EdgeConfig

app = typer.Typer(help="The gateway's edge agent.", no_args_is_help=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The gateway's YAML config; ANMIN_EDGE_* variables override it."
    ),
]


def _load(config: Path) -> EdgeConfig:
    from edge import load
    from rules import ConfigError

    try:
        return load(config)
    except ConfigError as exc:
        errors.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command("run")
def edge_run(
    config: ConfigOption,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="One JSON object a log line (for journald).")
    ] = False,
) -> None:
    """Run the edge agent of one gateway, as its YAML config describes (see deploy/).

    SIGTERM and Ctrl-C stop it cleanly: rule state saved, telemetry flushed.
    """
    from edge import EdgeAgent

    logging_setup(verbose, json_logs=json_logs)
    agent = EdgeAgent(_load(config))

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, task.cancel)
        if agent.config.metrics_port is not None:
            from edge.metrics import serve_metrics

            serve_metrics(agent, agent.config.metrics_port)
        await agent.run()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    finally:
        agent.close()
    errors.print("[dim]edge agent stopped[/]")


@app.command("check-config")
def edge_check_config(config: ConfigOption) -> None:
    """Check a gateway config (and ANMIN_EDGE_* overrides) without starting anything."""
    settings = _load(config)
    kinds: dict[str, int] = {}
    for device in settings.devices:
        kinds[device.kind] = kinds.get(device.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no devices"
    telemetry = settings.telemetry.url if settings.telemetry else "off"
    console.print(
        f"[green]ok[/] {config}: site {settings.site}, gateway {settings.gateway}, "
        f"building {settings.building}; {summary}; broker "
        f"{settings.broker.host}:{settings.broker.port}; telemetry {telemetry}"
    )
