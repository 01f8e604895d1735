"""Discovery: a device not listed under devices: that announces itself is taken in (Ingest)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from edge.config import DeviceConfig, DiscoveryConfig
from edge.ingest import Accepted, Ingest, Rejection
from wire import Codec, DeviceStatus, Reading, Reason, topics

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
LISTED = DeviceConfig(id="gas-1", kind="gas", unit="101")


EVERY_KIND = DiscoveryConfig()


def ingest(discovery: DiscoveryConfig | None = EVERY_KIND) -> Ingest:
    return Ingest("s1", "gw-1", [LISTED], Codec(), discovery)


def announce(
    target: Ingest, device: str, state: str = "online", **fields: object
) -> Accepted | Rejection:
    status = DeviceStatus(device=device, state=state, ts=NOW, **fields)  # type: ignore[arg-type]
    return target.accept(topics.status("s1", "gw-1", device), msgspec.json.encode(status), NOW)


def reading(target: Ingest, device: str, seq: int = 1) -> Accepted | Rejection:
    body = Reading(device=device, seq=seq, ts=NOW, values={"gas_lel": 1.0})
    return target.accept(topics.reading("s1", "gw-1", device), msgspec.json.encode(body), NOW)


def test_an_announced_device_is_taken_in_where_it_says_it_is() -> None:
    target = ingest()
    assert isinstance(reading(target, "gas-9"), Rejection)  # not yet announced
    result = announce(target, "gas-9", kind="gas", unit="301", room="kitchen", interval_s=5.0)
    assert isinstance(result, Accepted)
    assert result.discovered == DeviceConfig(
        id="gas-9", kind="gas", unit="301", room="kitchen", interval_s=5.0
    )
    assert target.devices["gas-9"].state == "online"
    assert isinstance(reading(target, "gas-9"), Accepted)
    assert target.counters["devices_discovered"] == 1
    assert target.discovered == {"gas-9": result.discovered}


def test_without_discovery_an_announcement_is_an_unknown_device() -> None:
    target = ingest(None)
    result = announce(target, "gas-9", kind="gas")
    assert isinstance(result, Rejection) and result.reason is Reason.UNKNOWN_DEVICE
    assert "gas-9" not in target.devices


def test_what_is_not_taken_in_says_why() -> None:
    target = ingest(DiscoveryConfig(kinds=["gas", "co"], max_devices=1))
    silent = announce(target, "gas-8")  # a status naming no kind
    assert isinstance(silent, Rejection) and silent.reason is Reason.UNKNOWN_DEVICE
    assert "does not announce it" in silent.detail
    will = announce(target, "gas-8", kind="gas", state="offline")  # its last will
    assert isinstance(will, Rejection) and will.reason is Reason.UNKNOWN_DEVICE
    wrong = announce(target, "thing-1", kind="toaster")
    assert isinstance(wrong, Rejection) and wrong.reason is Reason.INVALID_VALUE
    assert "'toaster'" in wrong.detail and "gas" in wrong.detail
    barred = announce(target, "band-1", kind="wearable")
    assert isinstance(barred, Rejection) and barred.reason is Reason.UNKNOWN_DEVICE
    assert "discovery.kinds: gas, co" in barred.detail
    assert isinstance(announce(target, "gas-9", kind="gas"), Accepted)
    full = announce(target, "co-9", kind="co")
    assert isinstance(full, Rejection) and "discovery.max_devices (1)" in full.detail
    assert set(target.devices) == {"gas-1", "gas-9"}
    # The one taken in may announce itself again: it counts once against the limit.
    assert isinstance(announce(target, "gas-9", kind="gas"), Accepted)


def test_why_an_announcement_was_refused_is_reported_after_its_readings_were() -> None:
    """After a restart a device's readings may come before its retained status: the letter
    saying why its announcement was refused still goes, once."""
    target = ingest(DiscoveryConfig(kinds=["gas"]))
    first = reading(target, "band-1")
    assert isinstance(first, Rejection) and first.report
    assert isinstance(reading(target, "band-1", 2), Rejection)
    refused = announce(target, "band-1", kind="wearable")
    assert isinstance(refused, Rejection) and refused.report
    assert "discovery.kinds: gas" in refused.detail
    again = announce(target, "band-1", kind="wearable")
    assert isinstance(again, Rejection) and not again.report
    # Taken in once it is allowed, forgotten, unknown again: reported again, both.
    target.discovery = DiscoveryConfig()
    assert isinstance(announce(target, "band-1", kind="wearable"), Accepted)
    cleared = target.accept(topics.status("s1", "gw-1", "band-1"), b"", NOW)
    assert isinstance(cleared, Accepted) and cleared.forgotten == "band-1"
    gone = reading(target, "band-1", 3)
    assert isinstance(gone, Rejection) and gone.report
    target.discovery = DiscoveryConfig(kinds=["gas"])
    barred = announce(target, "band-1", kind="wearable")
    assert isinstance(barred, Rejection) and barred.report


def test_a_listed_device_stays_as_listed_whatever_it_announces() -> None:
    target = ingest()
    result = announce(target, "gas-1", kind="co", unit="999")
    assert isinstance(result, Accepted) and result.discovered is None
    assert target.devices["gas-1"].config == LISTED
    assert target.discovered == {}


def test_a_discovered_device_moves_by_announcing_and_its_last_will_moves_nothing() -> None:
    target = ingest()
    announce(target, "gas-9", kind="gas", unit="301")
    unchanged = announce(target, "gas-9", kind="gas", unit="301")
    assert isinstance(unchanged, Accepted) and unchanged.discovered is None
    moved = announce(target, "gas-9", kind="gas", unit="302")
    assert isinstance(moved, Accepted) and moved.discovered is not None
    assert target.devices["gas-9"].config.unit == "302"
    assert target.counters["devices_moved"] == 1
    will = DeviceStatus(device="gas-9", state="offline", ts=NOW, kind="gas")
    topic = topics.status("s1", "gw-1", "gas-9")
    result = target.accept(topic, msgspec.json.encode(will), NOW)
    assert isinstance(result, Accepted) and result.discovered is None
    assert target.devices["gas-9"].state == "offline"
    assert target.devices["gas-9"].config.unit == "302"


def test_a_move_discovery_refuses_leaves_the_device_where_it_was_and_its_status_counts() -> None:
    target = ingest(DiscoveryConfig(kinds=["gas"]))
    announce(target, "gas-9", kind="gas", unit="301")
    target.devices["gas-9"].state = "offline"
    for kind, reason in (("wearable", Reason.UNKNOWN_DEVICE), ("toaster", Reason.INVALID_VALUE)):
        result = announce(target, "gas-9", kind=kind, unit="302", actuators={"siren": "off"})
        assert isinstance(result, Accepted) and result.discovered is None
        assert result.dropped is not None and result.dropped.reason is reason  # a letter
        assert f"{kind!r}" in result.dropped.detail
        assert target.devices["gas-9"].config == DeviceConfig(id="gas-9", kind="gas", unit="301")
        assert target.devices["gas-9"].state == "online"
        assert target.devices["gas-9"].actuators == {"siren": "off"}
        target.devices["gas-9"].state = "offline"
    assert target.counters["rejected.unknown_device"] == 1
    assert target.counters["rejected.invalid_value"] == 1
    assert target.counters["devices_moved"] == 0
    assert isinstance(reading(target, "gas-9"), Accepted)  # still judged where it was


def test_devices_taken_in_before_are_taken_in_again_as_discovery_now_allows() -> None:
    saved = [
        DeviceConfig(id="gas-9", kind="gas", unit="301"),
        DeviceConfig(id="gas-1", kind="gas", unit="555"),  # listed since: as listed
        DeviceConfig(id="band-1", kind="wearable"),  # a kind no longer taken in
        DeviceConfig(id="co-9", kind="co"),
        DeviceConfig(id="co-10", kind="co"),  # past the limit
    ]
    target = ingest(DiscoveryConfig(kinds=["gas", "co"], max_devices=2))
    assert target.take_in(saved) == [saved[0], saved[3]]
    assert target.devices["gas-1"].config == LISTED
    assert set(target.devices) == {"gas-1", "gas-9", "co-9"}
    assert ingest(None).take_in(saved) == []


def test_an_announced_interval_a_loop_cannot_keep_is_refused() -> None:
    """A device announcing it reports every 1e-300 s would be silent after every reading
    (its silence alarm raised and cleared each time, each sent to the hub)."""
    target = ingest()
    result = announce(target, "gas-9", kind="gas", interval_s=1e-300)
    assert isinstance(result, Rejection) and "interval_s" in result.detail
    assert "gas-9" not in target.devices
