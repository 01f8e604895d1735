"""A simulated building loudspeaker: plays broadcasts and answers each with a receipt.

A pure model: no I/O, time is passed in, unless it is given a ``Voice`` (then each play is
also rendered to a WAV with espeak-ng, see ``firmware_sim.tts``).

What it plays (its *programme* for one broadcast): ``repeat`` renditions, each a chime then
the script (``wire.cap.script``: the text, a drill prefix for Exercise, further languages of
the CAP), one after another with a pause between them. Renditions are placed on a timeline:
a new play starts at once, interrupting whatever is on air (the newest warning takes the
air); renditions of other broadcasts not yet begun move after it.

An Update or a Cancel (``msg_type``) stops further renditions of the broadcasts its CAP
``references`` name (by broadcast id or CAP identifier): the one on air is cut short, the
later ones are dropped, and a late play of a cancelled broadcast is refused. Then its own
text, if any (e.g. the all-clear), is played like any broadcast. A ``stop`` command with a
broadcast stops that broadcast and those it references; without one it stops everything.

The receipt (one per play command, sent when the programme starts) carries
``wire.cap.content_hash``: SHA-256 of the UTF-8 script texts joined by line feeds, before
text-to-speech conversion and without the chime, so the hub can check it without pinyin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import wire
import wire.cap
from firmware_sim import tts

GAP_S = 2.0  # between two renditions


def content_hash(broadcast: wire.Broadcast) -> str:
    """The hash a receipt carries; see ``wire.cap.content_hash`` (the hub uses the same)."""
    return wire.cap.content_hash(broadcast)


@dataclass(frozen=True, slots=True)
class Rendition:
    """One time through a broadcast's script (chime and words) on one speaker."""

    broadcast_id: str
    number: int  # 1 .. repeat
    start: datetime
    end: datetime
    cut: bool = False  # stopped (or interrupted) while on air


@dataclass(slots=True)
class _Programme:
    broadcast: wire.Broadcast
    names: frozenset[str]  # its id and its CAP identifier: what a Cancel may reference
    seconds: float  # one rendition
    renditions: list[Rendition]


@dataclass(frozen=True, slots=True)
class Voice:
    """Renders each play to ``wav_dir/{broadcast id}-{speaker}.wav`` with espeak-ng.

    Without espeak-ng the speaker still plays (silently, detail says so) and receipts.
    """

    wav_dir: Path
    binary: str | None = None

    def available(self) -> bool:
        return (self.binary or tts.espeak_binary()) is not None


class Speaker:
    """Plays ``play`` commands that carry a broadcast; ``failing`` makes every play fail.

    Idempotent on the broadcast id: MQTT delivers at least once, so a redelivered play is not
    played again; the first receipt is returned again, unchanged. A failed play is not
    remembered (except a refused cancelled one), so a retry may succeed once the fault is gone.
    """

    kind = "speaker"

    def __init__(
        self,
        device_id: str,
        building: str,
        *,
        failing: bool = False,
        voice: Voice | None = None,
    ) -> None:
        wire.topics.check_id(device_id, "device")
        wire.topics.check_id(building, "building")
        self.device_id = device_id
        self.building = building
        self.failing = failing
        self.voice = voice
        self.played: list[wire.Broadcast] = []
        self.commands: list[wire.Command] = []
        self.wavs: dict[str, Path] = {}
        self._receipts: dict[str, wire.Receipt] = {}
        self._programmes: dict[str, _Programme] = {}
        self._stopped: dict[str, datetime] = {}  # identifier -> when it was cancelled

    # -- commands ---------------------------------------------------------------------------

    def apply(self, cmd: wire.Command, now: datetime) -> wire.Receipt | None:
        """Carry out a command; a receipt for a play, ``None`` for anything else."""
        self.commands.append(cmd)
        broadcast = cmd.broadcast
        if cmd.action == "stop":
            if broadcast is None:
                self.stop_all(now)
            else:
                self._stop(wire.cap.identifiers(broadcast) | wire.cap.referenced(broadcast), now)
            return None
        if cmd.action != "play" or broadcast is None:
            return None
        earlier = self._receipts.get(broadcast.id)
        if earlier is not None:
            return earlier
        names = wire.cap.identifiers(broadcast)
        detail = ""
        if broadcast.msg_type in ("Update", "Cancel"):
            targets = wire.cap.referenced(broadcast)
            if not targets:
                return self._receipt(
                    broadcast, now, "failed", f"{broadcast.msg_type} names no reference in its CAP"
                )
            stopped = self._stop(targets, now)
            detail = f"stopped {stopped} rendition(s) of {len(targets)} referenced broadcast(s)"
        cancelled = [self._stopped[n] for n in names if n in self._stopped]
        if cancelled:
            receipt = self._receipt(
                broadcast, now, "failed", f"cancelled at {min(cancelled).isoformat()}"
            )
            self._receipts[broadcast.id] = receipt  # for good: it must never play
            return receipt
        if broadcast.expires is not None and broadcast.expires <= now:
            return self._receipt(broadcast, now, "failed", "expired before it could play")
        if self.failing:
            return self._receipt(broadcast, now, "failed", "simulated speaker fault")
        said = tts.utterances(broadcast)
        seconds = tts.estimate_seconds(said)
        if self.voice is not None and said:
            rendered = self._render(broadcast, said)
            if isinstance(rendered, str):
                return self._receipt(broadcast, now, "failed", rendered)
            if rendered is None:
                detail = (detail + "; " if detail else "") + "no espeak-ng: played silently"
            else:
                seconds = rendered.seconds
        self.played.append(broadcast)
        if said:
            self._schedule(_Programme(broadcast, names, seconds, []), now)
        receipt = self._receipt(broadcast, now, "played", detail)
        self._receipts[broadcast.id] = receipt
        return receipt

    def stop_all(self, now: datetime) -> int:
        """Stop everything on air or to come; how many renditions were stopped."""
        names: frozenset[str] = frozenset()
        for programme in self._programmes.values():
            names |= programme.names
        return self._stop(names, now, remember=False)

    # -- what was heard ---------------------------------------------------------------------

    def renditions(self, broadcast_id: str | None = None) -> list[Rendition]:
        """Renditions still on the timeline (past and to come), in start order."""
        out = [
            r
            for p in self._programmes.values()
            if broadcast_id is None or p.broadcast.id == broadcast_id
            for r in p.renditions
        ]
        return sorted(out, key=lambda r: r.start)

    def heard(self, now: datetime, broadcast_id: str | None = None) -> list[Rendition]:
        """Renditions begun by ``now``."""
        return [r for r in self.renditions(broadcast_id) if r.start <= now]

    def on_air(self, now: datetime) -> Rendition | None:
        return next((r for r in self.renditions() if r.start <= now < r.end), None)

    def status(
        self, now: datetime, state: Literal["online", "offline"] = "online"
    ) -> wire.DeviceStatus:
        return wire.DeviceStatus(
            device=self.device_id,
            state=state,
            ts=now,
            kind=self.kind,
        )

    # -- the timeline -----------------------------------------------------------------------

    def _schedule(self, programme: _Programme, now: datetime) -> None:
        # Whatever is on air is interrupted; what has not begun moves after the new programme.
        waiting: list[tuple[_Programme, Rendition]] = []
        for other in self._programmes.values():
            kept = []
            for r in other.renditions:
                if r.start >= now:
                    waiting.append((other, r))
                elif r.end > now:
                    kept.append(replace(r, end=now, cut=True))
                else:
                    kept.append(r)
            other.renditions = kept
        step = timedelta(seconds=programme.seconds)
        gap = timedelta(seconds=GAP_S)
        at = now
        for number in range(1, programme.broadcast.repeat + 1):
            programme.renditions.append(Rendition(programme.broadcast.id, number, at, at + step))
            at += step + gap
        for other, r in sorted(waiting, key=lambda pair: pair[1].start):
            length = r.end - r.start
            other.renditions.append(replace(r, start=at, end=at + length))
            at += length + gap
        self._programmes[programme.broadcast.id] = programme

    def _stop(self, names: frozenset[str], now: datetime, *, remember: bool = True) -> int:
        if remember:
            for name in names:
                self._stopped.setdefault(name, now)
        stopped = 0
        for programme in self._programmes.values():
            if not programme.names & names:
                continue
            kept = []
            for r in programme.renditions:
                if r.start >= now:
                    stopped += 1
                elif r.end > now:
                    kept.append(replace(r, end=now, cut=True))
                    stopped += 1
                else:
                    kept.append(r)
            programme.renditions = kept
        return stopped

    # -- sound and receipts -----------------------------------------------------------------

    def _render(
        self, broadcast: wire.Broadcast, said: tuple[tts.Utterance, ...]
    ) -> tts.Rendering | str | None:
        """The rendering, ``None`` without espeak-ng, or why it failed."""
        assert self.voice is not None
        binary = self.voice.binary or tts.espeak_binary()
        if binary is None:
            return None
        wav = self.voice.wav_dir / f"{broadcast.id}-{self.device_id}.wav"
        try:
            rendering = tts.render(said, wav, binary)
        except tts.TtsError as exc:
            return f"text to speech failed: {exc}"[:256]
        self.wavs[broadcast.id] = wav
        return rendering

    def _receipt(
        self,
        broadcast: wire.Broadcast,
        now: datetime,
        outcome: Literal["played", "failed"],
        detail: str = "",
    ) -> wire.Receipt:
        return wire.Receipt(
            broadcast_id=broadcast.id,
            speaker=self.device_id,
            outcome=outcome,
            ts=now,
            content_hash=content_hash(broadcast),
            site=broadcast.site,
            building=self.building,
            detail=detail[:256],
        )


def espeak_binary() -> str | None:
    return tts.espeak_binary()


def synthesise(text: str, language: str, wav: Path) -> bool:
    """Speak ``text`` (a chime, then the words) into a WAV with espeak-ng, if installed.

    Kept for the scenario runner's ``--wav-dir``; ``Speaker(voice=Voice(...))`` renders the
    whole script (drill prefix, every language) instead.
    """
    if espeak_binary() is None:
        return False
    said = tts.utterance(wire.cap.Announcement(language, text))
    try:
        tts.render([said], wav)
    except tts.TtsError:
        return False
    return wav.exists()
