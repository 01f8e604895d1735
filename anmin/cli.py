"""The ``anmin`` command: the front door to every part of Anmin.

Each subcommand imports its package only when it runs, so a gateway that installed
``anmin[edge]`` never needs the hub's libraries. Subcommands live in anmin/commands/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from anmin.commands import broker, edge, grafana, hub, rules, sim, wire
from anmin.commands import eval as eval_command
from anmin.common import console, logging_setup

app = typer.Typer(
    help="Anmin (安民): community sensing and early warning. "
    "Start with 'anmin demo' to watch a gas alarm travel from a sensor to the speakers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(edge.app, name="edge")
app.add_typer(hub.app, name="hub")
app.add_typer(sim.app, name="sim")
app.add_typer(rules.app, name="rules")
app.add_typer(wire.app, name="wire")
app.add_typer(eval_command.app, name="eval")
app.add_typer(grafana.app, name="grafana")
app.add_typer(broker.app, name="broker")


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
    community: Annotated[
        bool,
        typer.Option(
            "--community",
            help="Run the sample community instead: 4 gateways, ~300 devices, two hours with "
            "incidents of every kind in the first (needs Mosquitto).",
        ),
    ] = False,
    speed: Annotated[
        float, typer.Option(help="With --community: how much faster than real time.")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Run a broker, the hub, one gateway and a simulated building; a gas leak follows.

    The terminal shows each step as it happens: reading -> alert -> siren -> hub ->
    broadcast -> speaker receipt. Ctrl-C stops everything.
    """
    from anmin.demo import (
        CommunityOptions,
        DemoOptions,
        default_data_dir,
        run_community_demo,
        run_demo,
    )

    logging_setup(verbose)
    if community:
        community_options = CommunityOptions(
            data_dir=data_dir or default_data_dir(), speed=speed, seed=seed, http_port=port
        )
        try:
            code = asyncio.run(run_community_demo(community_options, console))
        except KeyboardInterrupt:
            console.print("[dim]demo stopped[/]")
            code = 0
        raise typer.Exit(code)
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
