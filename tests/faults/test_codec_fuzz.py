"""Hypothesis-generated payloads into the codec and the gateway's ingest: whatever arrives,
the answer is a decoded message or a WireError with a reason, never another exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import DeviceConfig
from edge.ingest import Accepted, Ingest, Rejection
from wire import (
    Ack,
    AlertEvent,
    Broadcast,
    Codec,
    Command,
    DeviceStatus,
    Reading,
    Reason,
    Receipt,
    WireError,
    topics,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MODELS: list[type[msgspec.Struct]] = [
    Reading,
    DeviceStatus,
    AlertEvent,
    Ack,
    Command,
    Broadcast,
    Receipt,
]
GOOD = msgspec.json.encode(
    Reading(device="gas-1", seq=7, ts=NOW, values={"gas_lel": 1.5, "co_ppm": 3.0})
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
# Objects shaped like readings, with every field possibly wrong.
reading_like = st.fixed_dictionaries(
    {},
    optional={
        "v": json_values,
        "device": st.one_of(st.just("gas-1"), json_values),
        "seq": st.one_of(st.integers(min_value=-5, max_value=2**60), json_values),
        "ts": st.one_of(st.just("2026-11-28T12:00:00Z"), st.text(max_size=30), json_values),
        "values": st.one_of(
            st.dictionaries(st.sampled_from(["gas_lel", "co_ppm", "x"]), json_values),
            json_values,
        ),
        "extra": json_values,
    },
)


def encode_loosely(value: object) -> bytes:
    # json.dumps writes NaN and Infinity, which is exactly the kind of input to survive.
    return json.dumps(value, allow_nan=True, default=str).encode()


def decode_or_reason(codec: Codec, payload: bytes) -> None:
    for model in MODELS:
        try:
            codec.decode(payload, model, NOW)
        except WireError as exc:
            assert isinstance(exc.reason, Reason) and exc.detail
    try:
        codec.decode_readings(payload, NOW)
    except WireError as exc:
        assert isinstance(exc.reason, Reason)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_codec(payload: bytes) -> None:
    decode_or_reason(Codec(), payload)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes_the_codec(value: object) -> None:
    decode_or_reason(Codec(), encode_loosely(value))


@settings(max_examples=600, deadline=None)
@given(reading_like)
def test_reading_shaped_objects_decode_or_say_why(value: dict[str, object]) -> None:
    decode_or_reason(Codec(), encode_loosely(value))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_good_readings_never_crash_ingest_and_good_ones_still_pass(
    data: st.DataObject,
) -> None:
    ingest = Ingest("s1", "gw-1", [DeviceConfig(id="gas-1", kind="gas")], Codec())
    topic = topics.reading("s1", "gw-1", "gas-1")
    payload = bytearray(GOOD)
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        where = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        action = data.draw(st.sampled_from(["flip", "drop", "dup", "insert"]))
        if action == "flip":
            payload[where] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif action == "drop" and len(payload) > 1:
            del payload[where]
        elif action == "dup":
            payload.insert(where, payload[where])
        else:
            payload.insert(where, data.draw(st.integers(min_value=0, max_value=255)))
    result = ingest.accept(topic, bytes(payload), NOW)
    assert isinstance(result, Accepted | Rejection)
    if isinstance(result, Rejection):
        assert isinstance(result.reason, Reason) and result.detail
    # The device is not poisoned by what came before: a good reading still passes.
    after = msgspec.json.encode(Reading(device="gas-1", seq=10**9, ts=NOW, values={"gas_lel": 2.0}))
    assert isinstance(ingest.accept(topic, after, NOW), Accepted)
