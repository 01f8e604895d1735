"""Who may log in to a site's brokers: the hub, each gateway and each device, with a random
secret each. The usernames are fixed by the ids, and the rights of each (``wire.topics``'s
access rules) are fixed by the role, so a credential cannot speak for anyone else.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import msgspec

from wire import WireError, topics

# One user for every hub worker: they share a subscription group and the same rights.
HUB_USER = "anmin-hub"
# '@' is not allowed in an id (wire.topics.ID_PATTERN), so usernames never collide, and
# Mosquitto's password file (':' separated) and ACL file take it as it is.
_AT = "@"
SECRET_BYTES = 32  # 256 bits: far beyond guessing, so the hash needs no stretching to be safe


class SecurityError(Exception):
    """A site's security material cannot be made as asked (bad inventory, unreadable file)."""


class Role(StrEnum):
    HUB = "hub"
    GATEWAY = "gateway"
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class Principal:
    """One client that logs in to a broker, and what it may do there."""

    role: Role
    site: str | None = None
    gateway: str | None = None
    device: str | None = None

    @property
    def username(self) -> str:
        if self.role is Role.HUB:
            return HUB_USER
        if self.role is Role.GATEWAY:
            return gateway_user(_need(self.site), _need(self.gateway))
        return device_user(_need(self.site), _need(self.gateway), _need(self.device))

    def access(self) -> topics.Access:
        if self.role is Role.HUB:
            return topics.hub_access()
        if self.role is Role.GATEWAY:
            return topics.gateway_access(_need(self.site), _need(self.gateway))
        return topics.device_access(_need(self.site), _need(self.gateway), _need(self.device))


def _need(value: str | None) -> str:
    if value is None:
        raise SecurityError("a gateway needs its site, a device its site and gateway")
    return value


def gateway_user(site: str, gateway: str) -> str:
    return f"{topics.check_id(gateway, 'gateway')}{_AT}{topics.check_id(site, 'site')}"


def device_user(site: str, gateway: str, device: str) -> str:
    return f"{topics.check_id(device, 'device')}{_AT}{gateway_user(site, gateway)}"


@dataclass(frozen=True, slots=True)
class Inventory:
    """A site's gateways and, per gateway, its devices."""

    site: str
    gateways: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hub: bool = True  # include the hub's user (the central broker's files)

    def __post_init__(self) -> None:
        try:
            topics.check_id(self.site, "site")
            for gateway, devices in self.gateways.items():
                topics.check_id(gateway, "gateway")
                for device in devices:
                    topics.check_id(device, "device")
        except WireError as exc:
            raise SecurityError(str(exc)) from exc

    def principals(self) -> list[Principal]:
        found = [Principal(Role.HUB)] if self.hub else []
        for gateway in sorted(self.gateways):
            found.append(Principal(Role.GATEWAY, self.site, gateway))
            found += [
                Principal(Role.DEVICE, self.site, gateway, device)
                for device in sorted(set(self.gateways[gateway]))
            ]
        return found


def parse_devices(text: str, where: str = "devices file") -> dict[str, tuple[str, ...]]:
    """A plain device list: one gateway per line, then its devices (spaces or commas between),
    ``#`` starts a comment. A gateway may take several lines."""
    gateways: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].replace(",", " ").split()
        if not words:
            continue
        gateway, devices = words[0].removesuffix(":"), words[1:]
        for word, what in [(gateway, "gateway"), *((d, "device") for d in devices)]:
            try:
                topics.check_id(word, what)
            except WireError as exc:
                raise SecurityError(f"{where}:{number}: {exc}") from exc
        gateways.setdefault(gateway, []).extend(devices)
    return {gateway: tuple(devices) for gateway, devices in gateways.items()}


class _Stored(msgspec.Struct, forbid_unknown_fields=True):
    users: dict[str, str] = {}


@dataclass
class Credentials:
    """Username -> secret. Kept in a file only its owner can read; secrets never get logged."""

    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            stored = msgspec.json.decode(path.read_bytes(), type=_Stored)
        except (OSError, msgspec.DecodeError) as exc:
            raise SecurityError(f"cannot read credentials {path}: {exc}") from exc
        return cls(dict(stored.users))

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only (0600) from the first byte."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        body = msgspec.json.format(
            msgspec.json.encode(_Stored(dict(sorted(self.passwords.items()))))
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(body + b"\n")
        tmp.replace(path)

    def __getitem__(self, username: str) -> str:
        return self.passwords[username]

    def __contains__(self, username: object) -> bool:
        return username in self.passwords


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def issue(
    principals: Iterable[Principal],
    existing: Credentials | None = None,
    *,
    rotate: Iterable[str] = (),
) -> Credentials:
    """Credentials for exactly these principals: existing secrets are kept (devices already
    configured keep working) unless their username is in ``rotate``; users no longer listed
    are dropped, so a removed device can no longer log in."""
    old = existing.passwords if existing is not None else {}
    renew = set(rotate)
    passwords: dict[str, str] = {}
    for principal in principals:
        name = principal.username
        if name in passwords:
            raise SecurityError(f"user {name!r} is listed twice")
        passwords[name] = old[name] if name in old and name not in renew else new_secret()
    return Credentials(passwords)
