"""Ingest: sequence tracking, device restarts, physical ranges, batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from edge import ingest as ingest_module
from edge.config import DeviceConfig
from edge.ingest import Accepted, Ingest, Rejection
from wire import Codec, Reading, Reason, Receipt, topics, uuid7

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = topics.reading("s1", "gw-1", "gas-1")


def ingest() -> Ingest:
    return Ingest("s1", "gw-1", [DeviceConfig(id="gas-1", kind="gas")], Codec())


def payload(seq: int, lel: float = 1.0) -> bytes:
    return msgspec.json.encode(Reading(device="gas-1", seq=seq, ts=NOW, values={"gas_lel": lel}))


def accept(target: Ingest, seq: int, lel: float = 1.0) -> Accepted | Rejection:
    return target.accept(TOPIC, payload(seq, lel), NOW)


def test_duplicates_and_late_messages_are_rejected_and_gaps_counted() -> None:
    target = ingest()
    assert isinstance(accept(target, 10), Accepted)
    duplicate = accept(target, 10)
    assert isinstance(duplicate, Rejection) and duplicate.reason is Reason.DUPLICATE
    late = accept(target, 8)
    assert isinstance(late, Rejection) and late.reason is Reason.OUT_OF_ORDER
    assert isinstance(accept(target, 15), Accepted)
    assert target.counters["seq_gaps"] == 4


def test_a_restarted_device_is_not_locked_out_even_if_its_first_reading_was_lost() -> None:
    target = ingest()
    accept(target, 5000)
    for seq in (1, 2, 3):  # seq 0 was lost; these are far behind: a restart, not a replay
        assert isinstance(accept(target, seq, lel=40.0), Accepted)
    assert target.counters["device_restarts"] == 1
    assert target.devices["gas-1"].last_values["gas_lel"] == 40.0


def test_a_restarted_device_within_the_reorder_window_is_heard_at_once() -> None:
    """A device whose counter was at 30 reboots and its seq 0 is lost: 1, 2, ... are within
    the reorder window, so they were each taken as a late copy, and the device was blind
    until it passed 30 (half an hour at one a minute). Stamped later than seq 30, they are no
    copies: a restart. A true copy (a redelivery: the same stamp) is still a duplicate, and a
    late one (stamped earlier) still out of order."""
    target = ingest()
    for seq in range(31):
        assert isinstance(target.accept(TOPIC, stamped(seq, 0.5, seq), NOW), Accepted)
    for seq in range(1, 4):
        result = target.accept(TOPIC, stamped(seq, 40.0, 100 + seq), NOW)
        assert isinstance(result, Accepted), result
    assert target.counters["device_restarts"] == 1
    assert target.devices["gas-1"].last_values["gas_lel"] == 40.0
    copy = target.accept(TOPIC, stamped(3, 40.0, 103), NOW)
    assert isinstance(copy, Rejection) and copy.reason is Reason.DUPLICATE
    late = target.accept(TOPIC, stamped(2, 40.0, 102), NOW)
    assert isinstance(late, Rejection) and late.reason is Reason.OUT_OF_ORDER
    assert target.counters["device_restarts"] == 1


def stamped(seq: int, lel: float, seconds: float, **more: float) -> bytes:
    ts = NOW + timedelta(seconds=seconds)
    reading = Reading(device="gas-1", seq=seq, ts=ts, values={"gas_lel": lel, **more})
    return msgspec.json.encode(reading)


def test_a_value_outside_the_sensors_physical_range_is_left_out_and_passed_on_beside() -> None:
    """Its reading is still received (the device is alive, and its channel is faulted by the
    rules: Engine.feed), with a letter saying why the value was left out."""
    target = ingest()
    result = accept(target, 1, lel=-50.0)
    assert isinstance(result, Accepted) and result.dropped is not None
    assert result.dropped.reason is Reason.VALUE_OUT_OF_RANGE
    assert "physical range" in result.dropped.detail
    assert [r.values for r in result.readings] == [{}]
    assert result.outside == [{"gas_lel": -50.0}]
    assert target.counters["rejected.value_out_of_range"] == 1
    assert target.devices["gas-1"].last_values == {}
    assert target.devices["gas-1"].state == "online"


def test_a_replayed_reading_in_a_batch_does_not_take_the_others_down() -> None:
    target = ingest()
    accept(target, 3)
    batch = b"[" + payload(3) + b"," + payload(4) + b"," + payload(5) + b"]"
    result = target.accept(TOPIC, batch, NOW)
    assert isinstance(result, Accepted)
    assert [r.seq for r in result.readings] == [4, 5]
    assert target.counters["rejected.duplicate"] == 1


def test_an_unknown_device_is_reported_once_and_the_memory_of_them_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "UNKNOWN_REMEMBERED", 3)
    target = ingest()

    def reported(device: str) -> bool:
        topic = topics.reading("s1", "gw-1", device)
        result = target.accept(topic, payload(1), NOW)
        assert isinstance(result, Rejection) and result.reason is Reason.UNKNOWN_DEVICE
        return result.report

    assert reported("stray-0") and not reported("stray-0")  # once, not per message
    receipt = target.accept(topics.device_receipt("s1", "gw-1", "stray-0"), b'{"x": 1}', NOW)
    assert isinstance(receipt, Rejection) and receipt.reason is Reason.UNKNOWN_DEVICE
    assert not receipt.report  # once per device, not per topic
    for i in range(1, 100):  # junk under ever new ids: remembered up to the bound
        assert reported(f"stray-{i}")
    assert len(target._unknown_reported) == 3
    assert not reported("stray-99")
    assert reported("stray-0"), "forgotten long ago: reported again"
    assert target.counters["rejected.unknown_device"] == 104


def test_a_device_naming_ever_new_metrics_is_stopped_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the limit new names are left out (counted, for a dead letter), and the known
    metrics of the same reading (its gas level) still count."""
    monkeypatch.setattr(ingest_module, "METRICS_PER_DEVICE", 4)
    target = ingest()

    def send(seq: int, names: list[str]) -> Accepted | Rejection:
        values = dict.fromkeys(names, 1.0)
        body = msgspec.json.encode(Reading(device="gas-1", seq=seq, ts=NOW, values=values))
        return target.accept(TOPIC, body, NOW)

    assert isinstance(send(1, ["gas_lel", "t_1", "t_2"]), Accepted)
    whole = send(2, ["gas_lel", "t_3"])  # four names, all told
    assert isinstance(whole, Accepted) and whole.dropped is None
    partly = send(3, ["gas_lel", "t_4", "t_5"])
    assert isinstance(partly, Accepted)
    [reading] = partly.readings
    assert reading.values == {"gas_lel": 1.0}, "the gas level is judged all the same"
    assert partly.dropped is not None and partly.dropped.reason is Reason.TOO_MANY_ITEMS
    assert "t_4, t_5 left out" in partly.dropped.detail
    refused = send(4, ["t_6"])
    assert isinstance(refused, Rejection) and refused.reason is Reason.TOO_MANY_ITEMS
    assert sorted(target.devices["gas-1"].last_values) == ["gas_lel", "t_1", "t_2", "t_3"]
    assert target.counters["rejected.too_many_items"] == 2
    assert target.counters["readings"] == 3


def test_a_bad_reading_in_a_batch_is_left_out_alone_with_a_letter_and_each_fault_counted_once() -> (
    None
):
    """One reading of a batch with a value of the wrong type took the whole batch down (the
    batch is decoded in one go); the readings left out of a partly good batch were counted but
    got no dead letter; a batch with every reading bad counted its first fault twice; and a
    reading left out for its values made the next one count a gap."""
    target = ingest()
    bad_type = payload(2).replace(b'"gas_lel":1.0', b'"gas_lel":"high"')
    batch = b"[" + payload(1) + b"," + bad_type + b"," + payload(3, lel=-5.0) + b"]"
    result = target.accept(TOPIC, batch, NOW)
    # seq 3 is received without its value, which faults its channel (result.outside)
    assert isinstance(result, Accepted) and [r.seq for r in result.readings] == [1, 3]
    assert result.outside == [None, {"gas_lel": -5.0}]
    assert result.dropped is not None and result.dropped.reason is Reason.WRONG_TYPE
    assert result.dropped.detail.startswith("2 faults in 3 readings: reading [1]: Expected")
    assert "gas_lel = -5.0 is outside" in result.dropped.detail
    assert target.counters["rejected.wrong_type"] == 1
    assert target.counters["rejected.value_out_of_range"] == 1
    assert isinstance(target.accept(TOPIC, payload(4), NOW), Accepted)
    assert target.counters["seq_gaps"] == 1  # seq 2, which could not be read
    wrong = payload(5).replace(b'"gas_lel":1.0', b'"gas_lel":[]')
    every = b"[" + payload(4) + b"," + wrong + b"]"
    result = target.accept(TOPIC, every, NOW)
    assert isinstance(result, Rejection) and result.reason is Reason.WRONG_TYPE
    assert result.detail.startswith("2 faults in 2 readings: reading [1]: Expected")
    assert "seq 4 was already received" in result.detail
    assert target.counters["rejected.duplicate"] == 1
    assert target.counters["rejected.wrong_type"] == 2


def test_a_value_outside_its_range_leaves_that_channel_out_and_keeps_the_good_ones() -> None:
    """Left out whole before, the reading's good gas value was lost with it, and the
    device-out-of-range preset could never fire (the rules never saw the fault). In a batch
    ``outside`` stays aligned with the readings accepted."""
    target = ingest()
    assert isinstance(target.accept(TOPIC, stamped(1, 0.5, 0), NOW), Accepted)
    result = target.accept(TOPIC, stamped(2, 30.0, 1, temp_c=400.0), NOW)
    assert isinstance(result, Accepted) and result.dropped is not None
    assert result.dropped.reason is Reason.VALUE_OUT_OF_RANGE
    assert result.dropped.detail.startswith("temp_c = 400.0 is outside")
    assert [r.values for r in result.readings] == [{"gas_lel": 30.0}]
    assert result.outside == [{"temp_c": 400.0}]
    assert target.counters["rejected.value_out_of_range"] == 1
    assert target.devices["gas-1"].last_values == {"gas_lel": 30.0}
    assert target.devices["gas-1"].last_seq == 2
    batch = (
        b"["
        + stamped(3, 1.0, 2)
        + b","
        + stamped(4, 2.0, 3, temp_c=-41.0, co_ppm=9000.0)
        + b","
        + stamped(5, 3.0, 4)
        + b"]"
    )
    result = target.accept(TOPIC, batch, NOW)
    assert isinstance(result, Accepted) and [r.seq for r in result.readings] == [3, 4, 5]
    assert result.outside == [None, {"temp_c": -41.0, "co_ppm": 9000.0}, None]
    assert result.dropped is not None and "co_ppm = 9000.0 is outside" in result.dropped.detail
    assert target.counters["rejected.value_out_of_range"] == 2
    plain = target.accept(TOPIC, stamped(6, 1.0, 5), NOW)
    assert isinstance(plain, Accepted) and plain.outside is None and plain.dropped is None


def test_copies_of_earlier_readings_stay_copies_after_the_devices_clock_is_set_back() -> None:
    """The restart test (a lower seq stamped later) reads the latest stamp ever received: a
    device clock 10 minutes fast, then corrected, must not make a redelivered copy of an
    earlier reading (a 0 %LEL after a 40) look like a restart and be judged as current."""
    target = ingest()
    for seq in range(11):  # 10 minutes fast
        assert isinstance(target.accept(TOPIC, stamped(seq, 0.0, 600 + seq), NOW), Accepted)
    assert isinstance(target.accept(TOPIC, stamped(11, 40.0, 11), NOW), Accepted)  # corrected
    for seq, lel, at in ((10, 0.0, 610), (11, 40.0, 11), (9, 0.0, 609)):
        copy = target.accept(TOPIC, stamped(seq, lel, at), NOW)
        assert isinstance(copy, Rejection), (seq, copy)
    assert target.counters["device_restarts"] == 0
    assert target.devices["gas-1"].last_values["gas_lel"] == 40.0


def test_only_a_speaker_sends_receipts() -> None:
    """A gas sensor publishing on its receipt topic was forwarded, and the hub counted it as
    a delivery of the broadcast it named."""
    target = Ingest(
        "s1",
        "gw-1",
        [DeviceConfig(id="gas-1", kind="gas"), DeviceConfig(id="spk-1", kind="speaker")],
        Codec(),
    )
    for device, taken in (("gas-1", False), ("spk-1", True)):
        receipt = Receipt(
            broadcast_id=uuid7(), speaker=device, outcome="played", ts=NOW, content_hash="0" * 64
        )
        topic = topics.device_receipt("s1", "gw-1", device)
        result = target.accept(topic, msgspec.json.encode(receipt), NOW)
        if taken:
            assert isinstance(result, Accepted) and result.receipt == receipt
        else:
            assert isinstance(result, Rejection) and result.reason is Reason.INVALID_VALUE
            assert "not a speaker" in result.detail
    assert target.counters["rejected.invalid_value"] == 1
    assert target.counters["receipts"] == 1


def _named(seq: int, values: dict[str, float]) -> bytes:
    ts = NOW + timedelta(seconds=seq)
    return msgspec.json.encode(Reading(device="gas-1", seq=seq, ts=ts, values=values))


def test_names_sent_only_outside_their_range_count_against_the_metric_limit() -> None:
    """Split off before the limit was applied, ever new faulty names (any ``door_N_open``
    is a registered name) were each passed on to the rules, which keep every fault."""
    target = ingest()
    passed: set[str] = set()
    for n in range(1, 501):
        result = target.accept(TOPIC, _named(n, {"gas_lel": 1.0, f"door_{n}_open": 5.0}), NOW)
        assert isinstance(result, Accepted) and result.readings[0].values == {"gas_lel": 1.0}
        for bad in result.outside or []:
            passed.update(bad or {})
    assert len(passed) == ingest_module.METRICS_PER_DEVICE - 1  # and gas_lel
    assert target.counters["rejected.too_many_items"] == 500 - len(passed)


def test_a_channel_first_sent_outside_its_range_is_known_when_it_reads_well() -> None:
    """Its name was in no last value, so once the device had sent 64 other names, its first
    good value was left out as a new name, and the rules' fault on it never ended."""
    target = ingest()
    first = target.accept(TOPIC, _named(1, {"gas_lel": 1.0, "temp_c": 999.0}), NOW)
    assert isinstance(first, Accepted) and first.outside == [{"temp_c": 999.0}]
    assert first.dropped is not None and "(left out; the device's rules" in first.dropped.detail
    limit = ingest_module.METRICS_PER_DEVICE
    doors = [f"door_{i}_open" for i in range(limit - 2)]  # with gas_lel and temp_c: the limit
    for seq, start in enumerate(range(0, len(doors), 30), start=2):
        names = dict.fromkeys(doors[start : start + 30], 0.0)
        assert isinstance(target.accept(TOPIC, _named(seq, names), NOW), Accepted)
    good = target.accept(TOPIC, _named(10, {"gas_lel": 1.0, "temp_c": 20.0}), NOW)
    assert isinstance(good, Accepted) and good.dropped is None
    assert good.readings[0].values == {"gas_lel": 1.0, "temp_c": 20.0}
    assert target.devices["gas-1"].faulty == set()
    new = target.accept(TOPIC, _named(11, {"gas_lel": 1.0, "co_ppm": -1.0}), NOW)
    assert isinstance(new, Accepted) and new.outside is None  # a new name past the limit
    assert new.dropped is not None and new.dropped.reason is Reason.TOO_MANY_ITEMS
    assert "physical range" not in new.dropped.detail  # never checked: not passed on
