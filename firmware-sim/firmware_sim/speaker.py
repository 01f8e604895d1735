"""A simulated building loudspeaker: plays broadcasts and answers each with a receipt.

Pure model: no I/O, time is passed in. ``synthesise`` (separate, optional) speaks a
broadcast into a WAV with espeak-ng when that is installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Literal

import wire


def content_hash(broadcast: wire.Broadcast) -> str:
    """What a receipt proves was played: the SHA-256 (hex) of the broadcast's ``text``, UTF-8.

    Only ``text`` counts (not the headline, the repeat count or the CAP XML), because that is
    what the speaker speaks; the hub compares this with the hash of the text it sent.
    """
    return hashlib.sha256(broadcast.text.encode("utf-8")).hexdigest()


class Speaker:
    """Plays ``play`` commands that carry a broadcast; ``failing`` makes every play fail.

    Idempotent on the broadcast id: MQTT delivers at least once, so a redelivered play is not
    played again; the first receipt is returned again, unchanged. A failed play is not
    remembered, so a redelivery (or a retry) may succeed once the fault is gone.
    """

    kind = "speaker"

    def __init__(self, device_id: str, building: str, *, failing: bool = False) -> None:
        wire.topics.check_id(device_id, "device")
        wire.topics.check_id(building, "building")
        self.device_id = device_id
        self.building = building
        self.failing = failing
        self.played: list[wire.Broadcast] = []
        self.commands: list[wire.Command] = []
        self._receipts: dict[str, wire.Receipt] = {}

    def apply(self, cmd: wire.Command, now: datetime) -> wire.Receipt | None:
        """Carry out a command; a receipt for a play, ``None`` for anything else."""
        self.commands.append(cmd)
        broadcast = cmd.broadcast
        if cmd.action != "play" or broadcast is None:
            return None
        earlier = self._receipts.get(broadcast.id)
        if earlier is not None:
            return earlier
        if self.failing:
            return self._receipt(broadcast, now, "failed", "simulated speaker fault")
        self.played.append(broadcast)
        receipt = self._receipt(broadcast, now, "played")
        self._receipts[broadcast.id] = receipt
        return receipt

    def status(
        self, now: datetime, state: Literal["online", "offline"] = "online"
    ) -> wire.DeviceStatus:
        return wire.DeviceStatus(
            device=self.device_id,
            state=state,
            ts=now,
            kind=self.kind,
        )

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
            detail=detail,
        )


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng")


def synthesise(text: str, language: str, wav: Path) -> bool:
    """Speak ``text`` into a WAV file with espeak-ng, when it is installed (else False).

    Optional: a simulated speaker's receipt does not depend on it; the WAV lets a person hear
    what a real speaker would have played.
    """
    binary = espeak_binary()
    if binary is None:
        return False
    voice = {"zh-CN": "cmn", "zh": "cmn", "en": "en"}.get(language, language.split("-")[0])
    wav.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [binary, "-v", voice, "-w", str(wav), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return wav.exists()
