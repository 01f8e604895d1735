"""The MQTT topic tree, built and parsed in this one module.

Every topic lives under ``anmin/v1/{site}/``. Nothing else in the code base writes a topic
string by hand: a typo in a scattered literal is a silently lost alarm.

    anmin/v1/{site}/{gateway}/dev/{device}/reading   device  -> gateway
    anmin/v1/{site}/{gateway}/dev/{device}/status    device  -> gateway (retained, last will)
    anmin/v1/{site}/{gateway}/dev/{device}/cmd       gateway -> device
    anmin/v1/{site}/{gateway}/dev/{device}/receipt   speaker -> gateway (a play receipt)
    anmin/v1/{site}/{gateway}/alert                  edge    -> hub
    anmin/v1/{site}/{gateway}/ack                    hub     -> edge
    anmin/v1/{site}/{gateway}/heartbeat              edge    -> hub (retained, last will)
    anmin/v1/{site}/{gateway}/receipt                gateway -> hub
    anmin/v1/{site}/{gateway}/deadletter             edge    -> hub
    anmin/v1/{site}/broadcast                        hub     -> gateways
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wire.errors import Reason, WireError, shown

ROOT = "anmin"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"
# What a site, gateway or device id may look like: safe in a topic level and in a file name.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID = re.compile(ID_PATTERN)
# Hub workers split the alert load through this shared-subscription group.
HUB_SHARE_GROUP = "anmin-hub"


class Channel(StrEnum):
    """The last level of a topic: what kind of message travels on it."""

    READING = "reading"
    STATUS = "status"
    CMD = "cmd"
    DEVICE_RECEIPT = "device-receipt"  # dev/{device}/receipt; named apart from RECEIPT
    ALERT = "alert"
    ACK = "ack"
    HEARTBEAT = "heartbeat"
    RECEIPT = "receipt"
    DEADLETTER = "deadletter"
    BROADCAST = "broadcast"


_DEVICE_LEAF = {
    Channel.READING: "reading",
    Channel.STATUS: "status",
    Channel.CMD: "cmd",
    Channel.DEVICE_RECEIPT: "receipt",
}
_LEAF_DEVICE = {leaf: channel for channel, leaf in _DEVICE_LEAF.items()}
_GATEWAY_CHANNELS = {
    Channel.ALERT,
    Channel.ACK,
    Channel.HEARTBEAT,
    Channel.RECEIPT,
    Channel.DEADLETTER,
}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: the channel and the ids it names."""

    channel: Channel
    site: str
    gateway: str | None = None
    device: str | None = None

    def __str__(self) -> str:
        return build(self)


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is usable as one topic level, else raise ``WireError``."""
    if not _ID.fullmatch(value):
        raise WireError(
            Reason.BAD_TOPIC,
            f"{what} id {shown(value)} must match {ID_PATTERN} (letters, digits, '_', '.', '-')",
        )
    return value


def build(topic: Topic) -> str:
    site = check_id(topic.site, "site")
    if topic.channel is Channel.BROADCAST:
        return f"{PREFIX}/{site}/broadcast"
    if topic.gateway is None:
        raise WireError(Reason.BAD_TOPIC, f"a {topic.channel} topic needs a gateway")
    gateway = check_id(topic.gateway, "gateway")
    if topic.channel in _DEVICE_LEAF:
        if topic.device is None:
            raise WireError(Reason.BAD_TOPIC, f"a {topic.channel} topic needs a device")
        device = check_id(topic.device, "device")
        return f"{PREFIX}/{site}/{gateway}/dev/{device}/{_DEVICE_LEAF[topic.channel]}"
    return f"{PREFIX}/{site}/{gateway}/{topic.channel.value}"


def parse(topic: str) -> Topic:
    """Parse a concrete topic; raise ``WireError(BAD_TOPIC)`` when it is not in the tree."""
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != ROOT or levels[1] != VERSION:
        raise WireError(Reason.BAD_TOPIC, f"topic {shown(topic)} is not under {PREFIX}/")
    site = check_id(levels[2], "site")
    rest = levels[3:]
    if rest == ["broadcast"]:
        return Topic(Channel.BROADCAST, site)
    gateway = check_id(rest[0], "gateway")
    if len(rest) == 2:
        try:
            channel = Channel(rest[1])
        except ValueError:
            channel = None
        if channel in _GATEWAY_CHANNELS:
            return Topic(channel, site, gateway)
    if len(rest) == 4 and rest[1] == "dev" and rest[3] in _LEAF_DEVICE:
        return Topic(_LEAF_DEVICE[rest[3]], site, gateway, check_id(rest[2], "device"))
    raise WireError(Reason.BAD_TOPIC, f"topic {shown(topic)} does not fit the anmin/v1 tree")


# Builders for the topics one process publishes to.


def reading(site: str, gateway: str, device: str) -> str:
    return build(Topic(Channel.READING, site, gateway, device))


def status(site: str, gateway: str, device: str) -> str:
    return build(Topic(Channel.STATUS, site, gateway, device))


def command(site: str, gateway: str, device: str) -> str:
    return build(Topic(Channel.CMD, site, gateway, device))


def device_receipt(site: str, gateway: str, device: str) -> str:
    return build(Topic(Channel.DEVICE_RECEIPT, site, gateway, device))


def gateway_topic(channel: Channel, site: str, gateway: str) -> str:
    if channel not in _GATEWAY_CHANNELS:
        raise WireError(Reason.BAD_TOPIC, f"{channel} is not a gateway channel")
    return build(Topic(channel, site, gateway))


def broadcast(site: str) -> str:
    return build(Topic(Channel.BROADCAST, site))


# Subscription filters (with MQTT wildcards), also only here.


def gateway_devices_filter(site: str, gateway: str) -> str:
    """Everything the gateway's devices publish (readings, statuses, receipts, and junk)."""
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(gateway, 'gateway')}/dev/#"


def gateway_statuses_filter(site: str, gateway: str) -> str:
    """Every status of the gateway's devices (a part of the edge agent hears them all)."""
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(gateway, 'gateway')}/dev/+/status"


def device_commands_filter(site: str, gateway: str, device: str) -> str:
    return command(site, gateway, device)


def hub_filter(channel: Channel, *, shared: bool = False) -> str:
    """What the hub subscribes to: one gateway channel from every site and gateway.

    With ``shared`` the filter is an MQTT shared subscription, so that several hub processes
    split the messages between them instead of each getting every one.
    """
    if channel not in _GATEWAY_CHANNELS:
        raise WireError(Reason.BAD_TOPIC, f"{channel} is not a gateway channel")
    plain = f"{PREFIX}/+/+/{channel.value}"
    return f"$share/{HUB_SHARE_GROUP}/{plain}" if shared else plain


def hub_online() -> str:
    """Where a hub worker says it has (re)connected, so that gateways resend at once.

    ``_hub`` cannot be a site id (ids start with a letter or digit), so it never collides.
    """
    return f"{PREFIX}/_hub/online"


def everything_filter(site: str | None = None) -> str:
    """All Anmin traffic (of one site): for observers such as the demo's console."""
    return f"{PREFIX}/{check_id(site, 'site')}/#" if site else f"{PREFIX}/#"


# Access rules: the topics each kind of client may publish to and subscribe to. The broker's
# ACL file (anmin/security) is generated from these, and docs/security.md states the same
# rules for a clustered broker. Ids are explicit, never %u/%c substitutions, so a device's
# rights cannot depend on a username it chose.

# The gateway channels the hub reads (and the gateway writes).
GATEWAY_UPLINK_CHANNELS = (Channel.ALERT, Channel.HEARTBEAT, Channel.RECEIPT, Channel.DEADLETTER)


@dataclass(frozen=True, slots=True)
class Access:
    """What one client may do: topics (or filters) it may publish to and subscribe to."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def device_channel_filter(site: str, gateway: str, channel: Channel) -> str:
    """One device channel of every device of a gateway, e.g. all its devices' ``cmd``."""
    if channel not in _DEVICE_LEAF:
        raise WireError(Reason.BAD_TOPIC, f"{channel} is not a device channel")
    site, gateway = check_id(site, "site"), check_id(gateway, "gateway")
    return f"{PREFIX}/{site}/{gateway}/dev/+/{_DEVICE_LEAF[channel]}"


def device_access(site: str, gateway: str, device: str) -> Access:
    """A device publishes its own reading, status and receipt, and reads only its own cmd."""
    return Access(
        publish=(
            reading(site, gateway, device),
            status(site, gateway, device),
            device_receipt(site, gateway, device),
        ),
        subscribe=(command(site, gateway, device),),
    )


def gateway_access(site: str, gateway: str) -> Access:
    """A gateway's edge agent: its own uplink channels and its devices' commands out; its
    devices' traffic, its own acks, its site's broadcasts and the hub's presence in."""
    return Access(
        publish=(
            *(gateway_topic(channel, site, gateway) for channel in GATEWAY_UPLINK_CHANNELS),
            device_channel_filter(site, gateway, Channel.CMD),
        ),
        subscribe=(
            gateway_devices_filter(site, gateway),
            gateway_topic(Channel.ACK, site, gateway),
            broadcast(site),
            hub_online(),
        ),
    )


def hub_access() -> Access:
    """The hub reads every gateway's uplink channels (also as a shared subscription) and
    publishes acks, broadcasts and its own presence."""
    return Access(
        publish=(f"{PREFIX}/+/+/{Channel.ACK.value}", f"{PREFIX}/+/broadcast", hub_online()),
        subscribe=(
            *(hub_filter(channel) for channel in GATEWAY_UPLINK_CHANNELS),
            *(hub_filter(channel, shared=True) for channel in GATEWAY_UPLINK_CHANNELS),
        ),
    )
