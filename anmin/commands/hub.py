"""``anmin hub``: The hub: alert intake, store, broadcasts and the API."""

from __future__ import annotations

from typing import Annotated

import typer

from anmin.common import logging_setup, run_until_interrupted

app = typer.Typer(
    help="The hub: alert intake, store, broadcasts and the API.", no_args_is_help=True
)


@app.command("run")
def hubrun_until_interrupted(
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

    logging_setup(verbose)
    settings = HubSettings(broker=Broker(broker_host, broker_port), http_host=host, http_port=port)
    if db is not None:
        settings = HubSettings(
            database_url=db, broker=settings.broker, http_host=host, http_port=port
        )
    run_until_interrupted(serve(settings))
