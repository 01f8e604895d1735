"""The ``anmin`` command: the front door to every part of Anmin.

Each subcommand imports its package only when it runs, so a gateway that installed
``anmin[edge]`` never needs the hub's libraries.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="Anmin (安民): community sensing and early warning. "
    "Start with 'anmin demo' to watch a gas alarm travel from a sensor to the speakers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
edge_app = typer.Typer(help="The gateway's edge agent.", no_args_is_help=True)
hub_app = typer.Typer(
    help="The hub: alert intake, store, broadcasts and the API.", no_args_is_help=True
)
sim_app = typer.Typer(help="Simulated devices, for demos and tests.", no_args_is_help=True)
rules_app = typer.Typer(
    help="Rule files: check them before a gateway loads them.", no_args_is_help=True
)
wire_app = typer.Typer(
    help="The wire contract: JSON Schemas of the payloads.", no_args_is_help=True
)
app.add_typer(edge_app, name="edge")
app.add_typer(hub_app, name="hub")
app.add_typer(sim_app, name="sim")
app.add_typer(rules_app, name="rules")
app.add_typer(wire_app, name="wire")

console = Console()
errors = Console(stderr=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _run(coro: object) -> None:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        errors.print("[dim]stopped[/]")


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its hub database and outbox (wiped at start)."),
    ] = None,
    port: Annotated[int, typer.Option(help="The hub's HTTP port (a free one if taken).")] = 8080,
    leak_after: Annotated[
        float, typer.Option(help="Seconds before the simulated gas leak starts.")
    ] = 15.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated devices.")] = 7,
    exit_after_receipt: Annotated[
        float | None,
        typer.Option(help="Stop this many seconds after the first speaker receipt (for scripts)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Give up (exit 1) if no speaker receipt arrives within this many s."),
    ] = None,
    embedded_broker: Annotated[
        bool, typer.Option(help="Use the embedded amqtt broker even if Mosquitto is installed.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Run a broker, the hub, one gateway and a simulated building; a gas leak follows.

    The terminal shows each step as it happens: reading -> alert -> siren -> hub ->
    broadcast -> speaker receipt. Ctrl-C stops everything.
    """
    from anmin.demo import DemoOptions, default_data_dir, run_demo

    _logging(verbose)
    options = DemoOptions(
        data_dir=data_dir or default_data_dir(),
        http_port=port,
        leak_after_s=leak_after,
        seed=seed,
        exit_after_receipt_s=exit_after_receipt,
        timeout_s=timeout,
        force_embedded_broker=embedded_broker,
    )
    code = 0
    try:
        code = asyncio.run(run_demo(options, console))
    except KeyboardInterrupt:
        console.print("[dim]demo stopped[/]")
    raise typer.Exit(code)


@edge_app.command("run")
def edge_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's YAML config.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the edge agent of one gateway, as its YAML config describes (see deploy/)."""
    from edge import EdgeAgent, load
    from rules import ConfigError

    _logging(verbose)
    try:
        settings = load(config)
    except ConfigError as exc:
        errors.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from exc
    agent = EdgeAgent(settings)
    try:
        _run(agent.run())
    finally:
        agent.close()


@hub_app.command("run")
def hub_run(
    db: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL; default: SQLite in the data folder.")
    ] = None,
    broker_host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    host: Annotated[str, typer.Option(help="HTTP listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the hub: stores alerts from gateways, acks them, broadcasts on high gas alarms."""
    from bus import Broker
    from hub import HubSettings, serve

    _logging(verbose)
    settings = HubSettings(broker=Broker(broker_host, broker_port), http_host=host, http_port=port)
    if db is not None:
        settings = HubSettings(
            database_url=db, broker=settings.broker, http_host=host, http_port=port
        )
    _run(serve(settings))


@sim_app.command("run")
def sim_run(
    broker_host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    site: Annotated[str, typer.Option(help="Site id.")] = "demo",
    gateway: Annotated[str, typer.Option(help="Gateway id.")] = "gw-1",
    building: Annotated[str, typer.Option(help="Building id.")] = "b1",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same run.")] = 7,
    leak_after: Annotated[float, typer.Option(help="Seconds before the gas leak starts.")] = 15.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Simulate one building: a kitchen gas sensor that starts to leak, and a speaker."""
    from bus import Broker
    from firmware_sim.scenarios import gas_leak_building

    _logging(verbose)
    simulated = gas_leak_building(
        Broker(broker_host, broker_port),
        site=site,
        gateway=gateway,
        building=building,
        seed=seed,
        leak_after_s=leak_after,
    )
    _run(simulated.run())


@rules_app.command("check")
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


@wire_app.command("schemas")
def wire_schemas(
    out: Annotated[Path, typer.Option(help="Folder to write the JSON Schemas to.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write the JSON Schema of every payload model (committed under docs/schemas/)."""
    from wire.schemas import write

    for path in write(out):
        console.print(f"wrote {path}")
