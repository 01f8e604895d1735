"""``anmin broker``: a site's broker security: credentials, password and ACL files, TLS.

    anmin broker credentials --site s1 --gateways gw-1,gw-2 --devices devices.txt --out secrets/
    anmin broker ca --site s1 --host broker.example.org --host 10.0.0.2 --out secrets/tls/

Secrets are written to files readable by their owner only and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from anmin.common import console, errors

app = typer.Typer(
    help="Broker security: credentials, Mosquitto password and ACL files, the site's CA.",
    no_args_is_help=True,
)

CREDENTIALS = "credentials.json"
USERS_FILE = "mosquitto.passwd"
ACL_FILE = "mosquitto.acl"


def _split(values: list[str]) -> list[str]:
    return [word for value in values for word in value.replace(",", " ").split()]


@app.command()
def credentials(
    site: Annotated[str, typer.Option(help="The site id.")],
    out: Annotated[Path, typer.Option(help="Directory for credentials, password and ACL file.")],
    gateways: Annotated[
        list[str] | None,
        typer.Option(help="Gateway ids (comma-separated or repeated), also without devices."),
    ] = None,
    devices: Annotated[
        Path | None,
        typer.Option(help="A device list: per line a gateway id, then its device ids."),
    ] = None,
    edge_config: Annotated[
        list[Path] | None,
        typer.Option(help="A gateway's edge config: its gateway and devices (repeatable)."),
    ] = None,
    hub: Annotated[bool, typer.Option(help="Include the hub's user (the central broker).")] = True,
    rotate: Annotated[
        list[str] | None,
        typer.Option(help="Give these users new secrets ('all' for everyone)."),
    ] = None,
) -> None:
    """Issue a secret per hub, gateway and device; write the Mosquitto password and ACL files.

    Run it again after adding or removing devices: existing secrets are kept, removed
    devices lose their login.
    """
    from anmin.security import Credentials, Inventory, acl_file, issue, password_file
    from anmin.security.credentials import SecurityError, parse_devices

    try:
        listed = _split(gateways or [])
        inventory: dict[str, list[str]] = {gateway: [] for gateway in listed}
        if devices is not None:
            for gateway, ids in parse_devices(devices.read_text(), str(devices)).items():
                if listed and gateway not in inventory:
                    raise SecurityError(f"{devices}: gateway {gateway!r} is not in --gateways")
                inventory.setdefault(gateway, []).extend(ids)
        for path in edge_config or []:
            from edge.config import load

            config = load(path, env={})
            if config.site != site:
                raise SecurityError(f"{path}: site {config.site!r} is not {site!r}")
            inventory.setdefault(config.gateway, []).extend(d.id for d in config.devices)
        if not inventory:
            raise SecurityError("no gateways: give --gateways, --devices or --edge-config")
        site_inventory = Inventory(site, {g: tuple(ids) for g, ids in inventory.items()}, hub=hub)
        principals = site_inventory.principals()
        stored = out / CREDENTIALS
        existing = Credentials.load(stored) if stored.exists() else None
        renew = _split(rotate or [])
        if "all" in renew:
            renew = [p.username for p in principals]
        issued = issue(principals, existing, rotate=renew)
    except (SecurityError, OSError, ValueError) as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    out.mkdir(parents=True, exist_ok=True)
    issued.save(stored)
    _write_private(out / USERS_FILE, password_file(issued))
    _write_private(out / ACL_FILE, acl_file(principals))
    old = {} if existing is None else existing.passwords
    new = sum(1 for user, secret in issued.passwords.items() if old.get(user) != secret)
    console.print(
        f"{len(issued.passwords)} users ({len(inventory)} gateways), {new} new secrets:"
        f" {stored} (keep it secret), {out / USERS_FILE}, {out / ACL_FILE}"
    )


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner and its group (the broker's), never by everyone."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


@app.command()
def ca(
    site: Annotated[str, typer.Option(help="The site id (named in the certificates).")],
    out: Annotated[Path, typer.Option(help="Directory for the CA and the certificates.")],
    host: Annotated[
        list[str] | None,
        typer.Option(help="A host name or IP address clients use for the broker (repeatable)."),
    ] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(help="Also issue a client certificate with this username as CN."),
    ] = None,
    server: Annotated[bool, typer.Option(help="Issue the broker's server certificate.")] = True,
    new_ca: Annotated[
        bool, typer.Option(help="Replace an existing CA (every certificate must be reissued).")
    ] = False,
) -> None:
    """Make the site's CA (once), the broker's server certificate and client certificates."""
    from anmin.security.credentials import SecurityError
    from anmin.security.pki import DEFAULT_HOSTS, issue_client, issue_server, make_ca
    from wire import WireError
    from wire.topics import check_id

    try:
        check_id(site, "site")
        made = make_ca(site, out, replace=new_ca)
        console.print(f"CA: {made.cert} (key {made.key}: keep it off the brokers)")
        if server:
            files = issue_server(out, out, _split(host or []) or list(DEFAULT_HOSTS))
            console.print(f"server certificate: {files.cert}, key {files.key}")
        for username in _split(client or []):
            files = issue_client(out, out, username)
            console.print(f"client certificate for {username}: {files.cert}, key {files.key}")
    except (SecurityError, WireError, OSError) as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
