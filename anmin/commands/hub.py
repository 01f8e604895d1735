"""``anmin hub``: The hub: alert intake, store, incidents, notifications and the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anmin.common import logging_setup, run_until_interrupted

app = typer.Typer(
    help="The hub: alert intake, store, incidents, notifications and the API.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL (default: ANMIN_HUB_DB, else SQLite in the data folder)."),
]


@app.command("run")
def hubrun_until_interrupted(
    db: DbOption = None,
    broker_host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    host: Annotated[str, typer.Option(help="HTTP listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    policy: Annotated[
        Path | None, typer.Option(help="Routing policy (YAML): who is told what, and how.")
    ] = None,
    auth: Annotated[
        bool, typer.Option(help="Require a login on every endpoint but /health.")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the hub: stores alerts from gateways, acks them, groups them into incidents,
    notifies and escalates, broadcasts on high gas alarms. Other settings come from ANMIN_*
    variables (ANMIN_HUB_JWT_SECRET, ANMIN_HUB_ADMIN, ANMIN_HUB_ADMIN_PASSWORD...)."""
    from dataclasses import replace

    from bus import Broker
    from hub import HubSettings, serve

    logging_setup(verbose)
    settings = replace(
        HubSettings.from_env(),
        broker=Broker(broker_host, broker_port),
        http_host=host,
        http_port=port,
        auth_required=auth,
    )
    if db is not None:
        settings = replace(settings, database_url=db)
    if policy is not None:
        from hub.routing import load_policy

        load_policy(policy)  # a mistake in the file stops the hub here, with file:line
        settings = replace(settings, routing_policy=policy)
    run_until_interrupted(serve(settings))


@app.command("migrate")
def migrate(db: DbOption = None) -> None:
    """Bring the database to the newest schema (the hub also does this when it starts)."""
    from hub import HubSettings, Store

    store = Store(db or HubSettings.from_env().database_url)
    try:
        store.create_schema()
    finally:
        store.close()
    typer.echo("the hub's schema is up to date")


@app.command("add-person")
def add_person(
    username: str,
    role: Annotated[
        str,
        typer.Option(
            help="admin, staff, committee, family or installer; or gateway, for a gateway's "
            "own account (username gateway@site) that may only post its own events."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Full name (default: the username).")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    db: DbOption = None,
) -> None:
    """Add a person who can log in (the password is asked for, never taken on the command line)."""
    from hub import HubSettings, Store
    from hub.auth import hash_password

    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    store = Store(db or HubSettings.from_env().database_url)
    try:
        store.create_schema()
        person_id = store.add_person(
            username,
            name or username,
            role,
            password_hash=hash_password(password),
            email=email,
            phone=phone,
        )
    finally:
        store.close()
    typer.echo(f"added {username} ({role}) as person {person_id}")
