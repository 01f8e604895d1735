"""The speaker model: receipts, their content hash, idempotent replays, failures."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import wire
from firmware_sim.speaker import Speaker, content_hash

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def broadcast(text: str = "3号楼燃气泄漏，请立即撤离。") -> wire.Broadcast:
    return wire.Broadcast(
        id=wire.uuid7(),
        site="demo",
        ts=T0,
        severity=wire.Severity.SEVERE,
        headline="燃气泄漏",
        text=text,
        buildings=["b1"],
    )


def play(b: wire.Broadcast, device: str = "spk-b1") -> wire.Command:
    return wire.Command(id=wire.uuid7(), device=device, action="play", ts=T0, broadcast=b)


def test_play_gives_a_receipt_with_the_text_hash() -> None:
    speaker = Speaker("spk-b1", "b1")
    b = broadcast()
    receipt = speaker.apply(play(b), T0)
    assert receipt is not None
    assert receipt.outcome == "played"
    assert receipt.content_hash == hashlib.sha256(b.text.encode("utf-8")).hexdigest()
    assert receipt.content_hash == content_hash(b)
    assert (receipt.broadcast_id, receipt.speaker, receipt.building) == (b.id, "spk-b1", "b1")
    assert receipt.site == "demo"
    assert receipt.ts == T0
    assert speaker.played == [b]
    codec = wire.Codec()
    assert codec.decode(codec.encode(receipt), wire.Receipt, T0) == receipt


def test_hash_depends_on_the_text_only() -> None:
    a, b = broadcast("撤离"), broadcast("撤离")
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(broadcast("请留在室内"))


def test_duplicate_play_is_played_once_and_receipted_the_same() -> None:
    speaker = Speaker("spk-b1", "b1")
    b = broadcast()
    first = speaker.apply(play(b), T0)
    again = speaker.apply(play(b), T0 + timedelta(seconds=5))
    assert again == first
    assert speaker.played == [b]
    other = broadcast("另一条")
    third = speaker.apply(play(other), T0)
    assert third is not None
    assert third.broadcast_id == other.id
    assert speaker.played == [b, other]


def test_failing_speaker_gives_a_failed_receipt_and_can_recover() -> None:
    speaker = Speaker("spk-b1", "b1", failing=True)
    b = broadcast()
    receipt = speaker.apply(play(b), T0)
    assert receipt is not None
    assert receipt.outcome == "failed"
    assert receipt.detail
    assert receipt.content_hash == content_hash(b)
    assert speaker.played == []
    # A failure is not remembered: once fixed, the redelivered play is played.
    speaker.failing = False
    retry = speaker.apply(play(b), T0)
    assert retry is not None
    assert retry.outcome == "played"


def test_other_commands_give_no_receipt() -> None:
    speaker = Speaker("spk-b1", "b1")
    stop = wire.Command(id=wire.uuid7(), device="spk-b1", action="stop", ts=T0)
    no_broadcast = wire.Command(id=wire.uuid7(), device="spk-b1", action="play", ts=T0)
    assert speaker.apply(stop, T0) is None
    assert speaker.apply(no_broadcast, T0) is None
    assert len(speaker.commands) == 2
    status = speaker.status(T0)
    assert (status.kind, status.state) == ("speaker", "online")
