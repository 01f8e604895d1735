"""``anmin sim``: Simulated devices, for demos and tests."""

from __future__ import annotations

from typing import Annotated

import typer

from anmin.common import logging_setup, run_until_interrupted

app = typer.Typer(help="Simulated devices, for demos and tests.", no_args_is_help=True)


@app.command("run")
def simrun_until_interrupted(
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

    logging_setup(verbose)
    simulated = gas_leak_building(
        Broker(broker_host, broker_port),
        site=site,
        gateway=gateway,
        building=building,
        seed=seed,
        leak_after_s=leak_after,
    )
    run_until_interrupted(simulated.run())
