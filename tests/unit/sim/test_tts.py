"""Speaker playback: chime and text to speech (pinyin, numbers as words), repeats, drills,
Update and Cancel, receipts with the script's hash, and real WAVs from espeak-ng."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import wire
from firmware_sim import tts
from firmware_sim.speaker import GAP_S, Speaker, Voice, content_hash
from wire import cap

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="espeak-ng is not installed (apt-get install -y espeak-ng)"
)
FIELDS = cap.CapFields(sender="anmin@demo", event="燃气泄漏", area=cap.Area("3号楼"))


def broadcast(**changes: Any) -> wire.Broadcast:
    fields: dict[str, Any] = {
        "id": wire.uuid7(),
        "site": "demo",
        "ts": T0,
        "severity": wire.Severity.EXTREME,
        "headline": "燃气泄漏",
        "text": "3号楼燃气泄漏，请立即撤离。",
        "buildings": ["b3"],
    }
    fields.update(changes)
    return wire.Broadcast(**fields)


def cancel_of(*originals: wire.Broadcast, at: datetime, text: str = "") -> wire.Broadcast:
    b = broadcast(msg_type="Cancel", ts=at, text=text, headline="警报解除" if text else "")
    refs = tuple(cap.Reference("anmin@demo", o.id, o.ts) for o in originals)
    return cap.with_cap(b, dataclasses.replace(FIELDS, references=refs, urgency="Past"))


def play(b: wire.Broadcast, at: datetime = T0) -> wire.Command:
    return wire.Command(id=wire.uuid7(), device="spk-b3", action="play", ts=at, broadcast=b)


# -- numbers and pinyin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("3号楼", "三号楼"),
        ("12号楼", "十二号楼"),
        ("101室", "一零一室"),
        ("2026年", "二零二六年"),
        ("浓度25%", "浓度百分之二十五"),
        ("3.5米", "三点五米"),
        ("1005人", "一千零五人"),
        ("12000人", "一万二千人"),
        ("115", "一百一十五"),
        ("0", "零"),
        ("14:30集合", "十四点三十分集合"),
        ("8:05", "八点零五分"),
        ("电话01012345", "电话零一零一二三四五"),
        ("没有数字", "没有数字"),
    ],
)
def test_numbers_become_chinese_words(text: str, words: str) -> None:
    assert tts.numbers_to_words(text) == words


def test_chinese_becomes_pinyin_with_tone_numbers_and_no_digits_of_its_own() -> None:
    spoken = tts.to_pinyin("3号楼燃气泄漏，请立即撤离。")
    assert spoken == "san1 hao4 lou2 ran2 qi4 xie4 lou4, qing3 li4 ji2 che4 li2."
    # Every digit left is a tone number on a syllable: none is read aloud as a number.
    assert re.fullmatch(r"([a-z]+[1-5]|[,.!?;: ])+", tts.to_pinyin("101室的2位老人，25%"))


def test_voices_per_language_and_the_drill_prefix() -> None:
    b = cap.with_cap(
        broadcast(status="Exercise"),
        dataclasses.replace(
            FIELDS, translations=(cap.InfoText("en-US", "Gas leak", "Leave building 3 now."),)
        ),
    )
    said = tts.utterances(b)
    assert [u.voice for u in said] == ["cmn-latn-pinyin", "en"]
    assert said[0].text.startswith("yan3 xi2.")  # 演习
    assert said[1].text == "This is a drill. Leave building 3 now."
    assert tts.estimate_seconds(said) > tts.CHIME_S + 3


def test_chime_is_audible() -> None:
    samples = tts.chime()
    assert len(samples) == pytest.approx(tts.CHIME_S * tts.SAMPLE_RATE, abs=2)
    assert max(abs(s) for s in samples) > 10_000


# -- playback: receipts, repeats, drills, Update, Cancel ------------------------------------------


def test_repeats_follow_one_another_with_a_gap() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(repeat=3)
    receipt = speaker.apply(play(b), T0)
    assert receipt is not None
    assert (receipt.outcome, receipt.content_hash) == ("played", content_hash(b))
    assert receipt.content_hash == hashlib.sha256(b.text.encode("utf-8")).hexdigest()
    plays = speaker.renditions(b.id)
    assert [r.number for r in plays] == [1, 2, 3]
    assert plays[0].start == T0
    length = plays[0].end - plays[0].start
    assert length > timedelta(seconds=tts.CHIME_S)
    for earlier, later in itertools.pairwise(plays):
        assert later.start - earlier.end == timedelta(seconds=GAP_S)
        assert later.end - later.start == length
    assert len(speaker.heard(T0)) == 1
    assert speaker.on_air(T0 + length / 2) == plays[0]


def test_an_exercise_says_it_is_a_drill_and_the_hash_covers_it() -> None:
    speaker = Speaker("spk-b3", "b3")
    drill = broadcast(status="Exercise")
    receipt = speaker.apply(play(drill), T0)
    assert receipt is not None
    expected = hashlib.sha256(("演习。" + drill.text).encode("utf-8")).hexdigest()
    assert receipt.content_hash == expected
    english = broadcast(status="Exercise", language="en", text="Leave now.")
    receipt = speaker.apply(play(english), T0)
    assert receipt is not None
    assert receipt.content_hash == hashlib.sha256(b"This is a drill. Leave now.").hexdigest()


def test_cancel_stops_further_plays_of_the_referenced_broadcast() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(repeat=5)
    speaker.apply(play(b), T0)
    first, second = speaker.renditions(b.id)[:2]
    mid_second = second.start + (second.end - second.start) / 2
    cancel = cancel_of(b, at=mid_second, text="3号楼燃气警报解除。")
    receipt = speaker.apply(play(cancel, mid_second), mid_second)
    assert receipt is not None
    assert receipt.outcome == "played"
    assert "stopped 4 rendition(s)" in receipt.detail
    kept = speaker.renditions(b.id)
    assert [r.number for r in kept] == [1, 2]
    assert kept[0] == first
    assert (kept[1].end, kept[1].cut) == (mid_second, True)
    # Nothing of the cancelled broadcast is heard later; the all-clear is played once.
    much_later = T0 + timedelta(minutes=10)
    assert [r.broadcast_id for r in speaker.heard(much_later)] == [b.id, b.id, cancel.id]
    assert speaker.renditions(cancel.id)[0].start == mid_second
    # A late (re)delivery of the cancelled broadcast's play is refused, for good.
    late = Speaker("spk-b3", "b3")
    late.apply(play(cancel, mid_second), mid_second)
    refused = late.apply(play(b, mid_second), mid_second)
    assert refused is not None
    assert (refused.outcome, refused.content_hash) == ("failed", content_hash(b))
    assert "cancelled" in refused.detail
    assert late.renditions(b.id) == []


def test_silent_cancel_and_cancel_without_references() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(repeat=3)
    speaker.apply(play(b), T0)
    at = T0 + timedelta(seconds=1)
    silent = cancel_of(b, at=at)
    receipt = speaker.apply(play(silent, at), at)
    assert receipt is not None
    assert receipt.outcome == "played"
    assert receipt.content_hash == hashlib.sha256(b"").hexdigest()  # nothing to say
    assert len(speaker.renditions(b.id)) == 1
    assert speaker.renditions(silent.id) == []
    bare = broadcast(msg_type="Cancel", text="")  # no CAP: nothing says what to cancel
    refused = Speaker("spk-b3", "b3").apply(play(bare), T0)
    assert refused is not None
    assert (refused.outcome, refused.detail) == ("failed", "Cancel names no reference in its CAP")


def test_update_supersedes_the_original() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(repeat=4)
    speaker.apply(play(b), T0)
    at = T0 + timedelta(seconds=1)
    update = cap.with_cap(
        broadcast(msg_type="Update", ts=at, text="泄漏已控制，请在室外等候。", repeat=2),
        dataclasses.replace(FIELDS, references=(cap.Reference("anmin@demo", b.id, b.ts),)),
    )
    receipt = speaker.apply(play(update, at), at)
    assert receipt is not None
    assert receipt.outcome == "played"
    assert [r.cut for r in speaker.renditions(b.id)] == [True]
    assert [r.number for r in speaker.renditions(update.id)] == [1, 2]


def test_a_new_warning_interrupts_and_the_rest_follows_it() -> None:
    speaker = Speaker("spk-b3", "b3")
    first = broadcast(repeat=3)
    speaker.apply(play(first), T0)
    at = T0 + timedelta(seconds=1)
    urgent = broadcast(ts=at, text="着火了，请立即撤离。")
    speaker.apply(play(urgent, at), at)
    order = [(r.broadcast_id, r.number) for r in speaker.renditions()]
    assert order == [(first.id, 1), (urgent.id, 1), (first.id, 2), (first.id, 3)]
    timeline = speaker.renditions()
    assert timeline[0].cut
    for earlier, later in itertools.pairwise(timeline):
        assert later.start >= earlier.end  # never two at once


def test_stop_commands() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(repeat=3)
    speaker.apply(play(b), T0)
    at = T0 + timedelta(seconds=1)
    stop = wire.Command(id=wire.uuid7(), device="spk-b3", action="stop", ts=at, broadcast=b)
    assert speaker.apply(stop, at) is None
    assert [r.cut for r in speaker.renditions(b.id)] == [True]
    other = broadcast(repeat=2)
    speaker.apply(play(other, at), at)
    assert speaker.stop_all(at) == 2
    assert speaker.renditions(other.id) == []


def test_expired_broadcast_is_not_played() -> None:
    speaker = Speaker("spk-b3", "b3")
    b = broadcast(expires=T0 + timedelta(minutes=1))
    receipt = speaker.apply(play(b), T0 + timedelta(minutes=2))
    assert receipt is not None
    assert (receipt.outcome, receipt.detail) == ("failed", "expired before it could play")


def test_without_espeak_a_voiced_speaker_still_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tts, "espeak_binary", lambda: None)
    speaker = Speaker("spk-b3", "b3", voice=Voice(tmp_path))
    b = broadcast()
    receipt = speaker.apply(play(b), T0)
    assert receipt is not None
    assert (receipt.outcome, receipt.content_hash) == ("played", content_hash(b))
    assert receipt.detail == "no espeak-ng: played silently"
    assert not list(tmp_path.iterdir())


def test_a_broken_espeak_fails_the_play(tmp_path: Path) -> None:
    broken = tmp_path / "espeak-ng"
    broken.write_text("#!/bin/sh\necho 'no such voice' >&2\nexit 1\n")
    broken.chmod(0o755)
    speaker = Speaker("spk-b3", "b3", voice=Voice(tmp_path / "wav", binary=str(broken)))
    receipt = speaker.apply(play(broadcast()), T0)
    assert receipt is not None
    assert receipt.outcome == "failed"
    assert "no such voice" in receipt.detail


# -- real sound -----------------------------------------------------------------------------------


@needs_espeak
@pytest.mark.parametrize(
    ("text", "language"),
    [("3号楼燃气泄漏，请立即撤离。", "zh-CN"), ("Gas leak in building 3. Leave now.", "en-US")],
)
def test_render_makes_a_real_wav_that_is_not_silent(
    tmp_path: Path, text: str, language: str
) -> None:
    said = tts.utterance(cap.Announcement(language, text))
    rendering = tts.render([said], tmp_path / "out.wav")
    stats = tts.wav_stats(rendering.path)
    assert stats.seconds == pytest.approx(rendering.seconds)
    assert stats.seconds > tts.CHIME_S + 1.0  # the chime and at least a second of words
    assert stats.rms > 0.02
    # The words after the chime are sound, not silence.
    speech = tts.speak(said)
    assert len(speech) / tts.SAMPLE_RATE > 1.0
    assert max(abs(s) for s in speech) > 3000
    # The estimate used without espeak-ng is in the right range.
    assert tts.estimate_seconds([said]) == pytest.approx(stats.seconds, rel=0.35)


@needs_espeak
def test_a_voiced_speaker_renders_every_language_and_times_repeats_by_it(tmp_path: Path) -> None:
    b = cap.with_cap(
        broadcast(status="Exercise", repeat=2),
        dataclasses.replace(
            FIELDS, translations=(cap.InfoText("en-US", "Gas leak", "Leave building 3 now."),)
        ),
    )
    speaker = Speaker("spk-b3", "b3", voice=Voice(tmp_path))
    receipt = speaker.apply(play(b), T0)
    assert receipt is not None
    assert (receipt.outcome, receipt.detail) == ("played", "")
    wav = speaker.wavs[b.id]
    stats = tts.wav_stats(wav)
    assert stats.rms > 0.02
    first, second = speaker.renditions(b.id)
    assert (first.end - first.start).total_seconds() == pytest.approx(stats.seconds)
    assert second.start == first.end + timedelta(seconds=GAP_S)


@needs_espeak
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_agrees_the_wav_is_sound(tmp_path: Path) -> None:
    said = tts.utterance(cap.Announcement("zh-CN", "请注意，这是演习。"))
    wav = tts.render([said], tmp_path / "out.wav").path
    out = subprocess.run(
        ["sox", str(wav), "-n", "stat"], capture_output=True, text=True, check=True
    ).stderr
    fields = dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    )
    assert float(fields["Length (seconds)"]) > tts.CHIME_S
    assert float(fields["RMS     amplitude"]) > 0.02
