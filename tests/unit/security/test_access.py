"""The access rules in wire.topics: each client's topics, and what they do not include."""

from __future__ import annotations

import pytest

from wire import WireError, topics
from wire.topics import Channel


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic-filter matching, as a broker's ACL applies it."""
    levels, parts = pattern.split("/"), topic.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index >= len(parts) or level not in ("+", parts[index]):
            return False
    return len(levels) == len(parts)


def test_a_device_publishes_only_its_own_topics_and_reads_only_its_commands() -> None:
    access = topics.device_access("s1", "gw-1", "gas-1")
    assert set(access.publish) == {
        topics.reading("s1", "gw-1", "gas-1"),
        topics.status("s1", "gw-1", "gas-1"),
        topics.device_receipt("s1", "gw-1", "gas-1"),
    }
    assert access.subscribe == (topics.command("s1", "gw-1", "gas-1"),)
    assert not any("+" in t or "#" in t for t in (*access.publish, *access.subscribe))


def test_a_gateways_rights_stop_at_its_own_site_and_gateway() -> None:
    access = topics.gateway_access("s1", "gw-1")
    allowed = [
        topics.gateway_topic(Channel.ALERT, "s1", "gw-1"),
        topics.gateway_topic(Channel.DEADLETTER, "s1", "gw-1"),
        topics.command("s1", "gw-1", "any-device"),
    ]
    refused = [
        topics.gateway_topic(Channel.ALERT, "s2", "gw-1"),
        topics.gateway_topic(Channel.ALERT, "s1", "gw-2"),
        topics.gateway_topic(Channel.ACK, "s1", "gw-1"),
        topics.broadcast("s1"),
        topics.hub_online(),
        topics.reading("s1", "gw-1", "gas-1"),
        topics.command("s1", "gw-2", "gas-1"),
    ]
    assert all(any(matches(p, t) for p in access.publish) for t in allowed)
    assert not [t for t in refused if any(matches(p, t) for p in access.publish)]
    readable = [
        topics.reading("s1", "gw-1", "gas-1"),
        topics.gateway_topic(Channel.ACK, "s1", "gw-1"),
        topics.broadcast("s1"),
        topics.hub_online(),
    ]
    unreadable = [
        topics.gateway_topic(Channel.ACK, "s1", "gw-2"),
        topics.broadcast("s2"),
        topics.reading("s1", "gw-2", "gas-1"),
        topics.gateway_topic(Channel.ALERT, "s1", "gw-2"),
    ]
    assert all(any(matches(p, t) for p in access.subscribe) for t in readable)
    assert not [t for t in unreadable if any(matches(p, t) for p in access.subscribe)]


def test_the_hub_reads_every_gateway_channel_and_forges_no_device_or_gateway_message() -> None:
    access = topics.hub_access()
    for channel in topics.GATEWAY_UPLINK_CHANNELS:
        assert topics.hub_filter(channel) in access.subscribe
        assert topics.hub_filter(channel, shared=True) in access.subscribe
    assert any(matches(p, topics.gateway_topic(Channel.ACK, "s9", "g")) for p in access.publish)
    assert any(matches(p, topics.broadcast("s9")) for p in access.publish)
    assert topics.hub_online() in access.publish
    forged = [
        topics.reading("s1", "gw-1", "gas-1"),
        topics.command("s1", "gw-1", "gas-1"),
        topics.gateway_topic(Channel.ALERT, "s1", "gw-1"),
        topics.gateway_topic(Channel.HEARTBEAT, "s1", "gw-1"),
    ]
    assert not [t for t in forged if any(matches(p, t) for p in access.publish)]


def test_access_rules_check_their_ids() -> None:
    with pytest.raises(WireError):
        topics.device_access("s1", "gw/1", "gas-1")
    with pytest.raises(WireError):
        topics.gateway_access("#", "gw-1")
    with pytest.raises(WireError):
        topics.device_channel_filter("s1", "gw-1", Channel.ALERT)
