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
    broker_host: Annotated[
        str | None,
        typer.Option(help="MQTT broker host (default: ANMIN_BROKER_HOST or 127.0.0.1)."),
    ] = None,
    broker_port: Annotated[
        int | None, typer.Option(help="MQTT broker port (default: ANMIN_BROKER_PORT, else 1883).")
    ] = None,
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
    variables (ANMIN_HUB_JWT_SECRET, ANMIN_HUB_ADMIN, ANMIN_HUB_ADMIN_PASSWORD, the broker's
    ANMIN_BROKER_USERNAME, ANMIN_BROKER_PASSWORD_FILE and ANMIN_BROKER_CA_FILE for TLS...,
    docs/security.md)."""
    from dataclasses import replace

    from hub import HubSettings, serve

    logging_setup(verbose)
    try:
        settings = HubSettings.from_env()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    # The options change where the broker is, never how the hub logs in to it.
    broker = replace(
        settings.broker,
        host=broker_host if broker_host is not None else settings.broker.host,
        port=broker_port if broker_port is not None else settings.broker.port,
    )
    settings = replace(settings, broker=broker, http_host=host, http_port=port, auth_required=auth)
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


ActorOption = Annotated[
    str | None,
    typer.Option(help="Who is doing this, for the audit log (default: cli:<login name>)."),
]


def _actor(actor: str | None) -> str:
    import getpass

    return actor or f"cli:{getpass.getuser()}"


@app.command("export-resident")
def export_resident(
    resident_id: int,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON here (default: standard output).")
    ] = None,
    actor: ActorOption = None,
    db: DbOption = None,
) -> None:
    """Everything the hub holds about one resident, as JSON (an access request). Audited."""
    import json

    from hub import HubSettings, Store
    from hub.clock import utc_now
    from hub.privacy import NoSuchResident
    from hub.privacy import export_resident as export

    store = Store(db or HubSettings.from_env().database_url)
    try:
        data = export(store, resident_id)
        store.append_audit(
            utc_now(), _actor(actor), "resident.exported", "resident", str(resident_id)
        )
    except NoSuchResident as exc:
        typer.echo(f"error: {exc} (list them with GET /api/v1/residents)", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote resident {resident_id}'s data to {out}")


@app.command("erase-resident")
def erase_resident(
    resident_id: int,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    actor: ActorOption = None,
    db: DbOption = None,
) -> None:
    """Erase one resident's personal data; their flat's safety record stays, anonymised.
    Cannot be undone. Audited."""
    from hub import HubSettings, Store
    from hub.clock import utc_now
    from hub.privacy import NoSuchResident
    from hub.privacy import erase_resident as erase

    if not yes:
        typer.confirm(f"erase resident {resident_id}'s personal data for good?", abort=True)
    store = Store(db or HubSettings.from_env().database_url)
    try:
        erasure = erase(store, resident_id, actor=_actor(actor), now=utc_now())
    except NoSuchResident as exc:
        typer.echo(f"error: {exc} (list them with GET /api/v1/residents)", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    changed = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in erasure.as_dict().items())
    typer.echo(f"erased resident {resident_id}: {changed}")
