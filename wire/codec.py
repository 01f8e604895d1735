"""Encode and decode payloads with limits; every rejection carries a ``Reason``.

The limits are what keep one broken or hostile device from hurting the rest: a size cap read
before parsing, finite numbers only, bounded strings and arrays (in the models), and
timestamps inside a window around the receiver's clock, which is passed in.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec

from wire.errors import Reason, WireError, shown
from wire.models import SCHEMA_VERSION, Reading

T = TypeVar("T", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 64 * 1024
    max_batch: int = 64
    # Device clocks drift; a few minutes ahead is tolerated, more is a broken clock.
    max_future: timedelta = timedelta(minutes=5)
    # Old data is still replayed after an outage (outboxes, device buffers), within reason.
    max_age: timedelta = timedelta(days=30)


class _Envelope(msgspec.Struct):
    v: Any = SCHEMA_VERSION


# msgspec's validation messages, mapped to our reasons. Order matters: first match wins.
_VALIDATION_REASONS: tuple[tuple[re.Pattern[str], Reason], ...] = (
    (re.compile(r"missing required field"), Reason.MISSING_FIELD),
    (re.compile(r"unknown field"), Reason.UNKNOWN_FIELD),
    (re.compile(r"Number out of range"), Reason.NON_FINITE_NUMBER),
    # Too long, too many: "<="; too short or empty (">=") falls through to invalid_value.
    (re.compile(r"Expected `str` of length <="), Reason.STRING_TOO_LONG),
    (re.compile(r"Expected `(array|object)` of length <="), Reason.TOO_MANY_ITEMS),
    (re.compile(r"Expected `(int|float)` [<>]=?"), Reason.VALUE_OUT_OF_RANGE),
    # Only at the top level: a payload that is a number, a string or null.
    (re.compile(r"^Expected `object( \| array)?`, got `\w+`$"), Reason.NOT_AN_OBJECT),
    (re.compile(r"Expected `[\w| ]+`, got `"), Reason.WRONG_TYPE),
)


def _reason_for(message: str) -> Reason:
    for pattern, reason in _VALIDATION_REASONS:
        if pattern.search(message):
            return reason
    return Reason.INVALID_VALUE


_SCALARS = (str, int, bool, type(None), datetime)


def _has_non_finite(value: object) -> bool:
    # On every encode, so written for speed: exact type checks, no generators.
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)  # type: ignore[arg-type]
    if kind in _SCALARS:
        return False
    if kind is dict:
        for item in value.values():  # type: ignore[attr-defined]
            if type(item) is float:
                if not math.isfinite(item):
                    return True
            elif type(item) not in _SCALARS and _has_non_finite(item):
                return True
        return False
    if kind is list or kind is tuple:
        return any(_has_non_finite(v) for v in value)  # type: ignore[attr-defined]
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if type(item) not in _SCALARS and _has_non_finite(item):
                return True
    return False


def _has_nan_literal(payload: bytes) -> bool:
    """True when the text is JSON except for NaN/Infinity tokens (which JSON does not have)."""
    found = False

    def constant(_: str) -> float:
        nonlocal found
        found = True
        return 0.0

    try:
        json.loads(payload, parse_constant=constant)
    except (ValueError, RecursionError):
        return False
    return found


class Codec:
    """Decodes bytes into models under ``Limits``, and encodes models into bytes."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[object, msgspec.json.Decoder[Any]] = {}
        batch = Annotated[
            list[Reading], msgspec.Meta(min_length=1, max_length=self.limits.max_batch)
        ]
        self._readings: msgspec.json.Decoder[Reading | list[Reading]] = msgspec.json.Decoder(
            Reading | batch
        )
        raw_batch = Annotated[
            list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=self.limits.max_batch)
        ]
        self._raw_batch: msgspec.json.Decoder[list[msgspec.Raw]] = msgspec.json.Decoder(raw_batch)
        self._reading: msgspec.json.Decoder[Reading] = msgspec.json.Decoder(Reading)

    def encode(self, message: msgspec.Struct) -> bytes:
        # msgspec writes NaN as null, which would smuggle a non-number past the receiver.
        if _has_non_finite(message):
            raise WireError(Reason.NON_FINITE_NUMBER, f"{type(message).__name__} has NaN/inf")
        return self._encoder.encode(message)

    def decode(
        self, payload: bytes, model: type[T], now: datetime, *, check_time: bool = True
    ) -> T:
        """Decode one message. ``check_time=False`` skips the timestamp window: for control
        messages (acks, broadcasts) and stored alerts, a skewed clock must not block safety."""
        decoder = self._decoders.get(model)
        if decoder is None:
            decoder = self._decoders[model] = msgspec.json.Decoder(model)
        message: T = self._parse(payload, decoder)
        self._check(message, now, check_time=check_time)
        return message

    def decode_readings(
        self, payload: bytes, now: datetime, *, check_time: bool = True
    ) -> list[Reading]:
        """One reading or a small batch (a JSON array of readings)."""
        decoded = self._parse(payload, self._readings)
        readings = decoded if isinstance(decoded, list) else [decoded]
        for reading in readings:
            self._check(reading, now, check_time=check_time)
        return readings

    def decode_readings_apart(
        self, payload: bytes, now: datetime, *, check_time: bool = True
    ) -> tuple[list[Reading], list[WireError]]:
        """``decode_readings``, but a batch with bad readings in it keeps its good ones: the
        readings, and a fault for each one left out (naming its place in the batch). A fault
        of the message as a whole (not JSON, too large, not readings at all) still raises."""
        decoded: Reading | list[Reading] | None = None
        try:
            decoded = self._parse(payload, self._readings)
            if isinstance(decoded, Reading):
                self._check(decoded, now, check_time=check_time)
                return [decoded], []
            for reading in decoded:
                self._check(reading, now, check_time=check_time)
            return decoded, []
        except WireError as exc:
            # msgspec names where a batch's element failed: "... - at `$[1].values`"; a
            # batch's element may also fail the checks after decoding
            if "- at `$[" not in exc.detail and not (
                isinstance(decoded, list) and len(decoded) > 1
            ):
                raise
        readings: list[Reading] = []
        faults: list[WireError] = []
        for index, item in enumerate(self._parse(payload, self._raw_batch)):
            try:
                reading = self._parse(bytes(item), self._reading)
                self._check(reading, now, check_time=check_time)
            except WireError as exc:
                faults.append(WireError(exc.reason, f"reading [{index}]: {exc.detail}"))
                continue
            readings.append(reading)
        return readings, faults

    def skewed(self, ts: datetime, now: datetime) -> bool:
        """Is ``ts`` outside the window a receiver that checks time would accept?"""
        return ts > now + self.limits.max_future or ts < now - self.limits.max_age

    def _parse(self, payload: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
        size = len(payload)
        if size == 0:
            raise WireError(Reason.EMPTY_PAYLOAD, "the payload is empty")
        if size > self.limits.max_payload_bytes:
            raise WireError(
                Reason.PAYLOAD_TOO_LARGE,
                f"{size} bytes is over the limit of {self.limits.max_payload_bytes}",
            )
        if not payload.isascii():  # the usual reading is ASCII: no str made to check it
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise WireError(Reason.NOT_UTF8, f"byte {exc.start} is not UTF-8") from exc
        try:
            return decoder.decode(payload)
        except RecursionError as exc:
            raise WireError(Reason.NESTED_TOO_DEEP, "the JSON is nested too deeply") from exc
        except msgspec.ValidationError as exc:
            self._raise_if_unsupported_version(payload)
            raise WireError(_reason_for(str(exc)), str(exc)) from exc
        except msgspec.DecodeError as exc:
            if _has_nan_literal(payload):
                raise WireError(
                    Reason.NON_FINITE_NUMBER, "NaN and Infinity are not numbers in JSON"
                ) from exc
            raise WireError(Reason.MALFORMED_JSON, str(exc)) from exc

    @staticmethod
    def _raise_if_unsupported_version(payload: bytes) -> None:
        try:
            envelope = msgspec.json.decode(payload, type=_Envelope)
        except msgspec.MsgspecError:
            return
        if envelope.v != SCHEMA_VERSION:
            raise WireError(
                Reason.UNSUPPORTED_VERSION,
                f"schema version {shown(envelope.v)}; this receiver reads v{SCHEMA_VERSION}",
            )

    def _check(self, message: msgspec.Struct, now: datetime, *, check_time: bool = True) -> None:
        version = getattr(message, "v", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise WireError(
                Reason.UNSUPPORTED_VERSION,
                f"schema version {shown(version)}; this receiver reads v{SCHEMA_VERSION}",
            )
        ts = getattr(message, "ts", None)
        if check_time and isinstance(ts, datetime):
            if ts > now + self.limits.max_future:
                raise WireError(
                    Reason.TIMESTAMP_IN_FUTURE,
                    f"ts {ts.isoformat()} is more than {self.limits.max_future} ahead of "
                    f"{now.isoformat()}; check the device's clock",
                )
            if ts < now - self.limits.max_age:
                raise WireError(
                    Reason.TIMESTAMP_TOO_OLD,
                    f"ts {ts.isoformat()} is more than {self.limits.max_age} old",
                )
