"""The demo's live console: every message on the site's topics, told as it happens.

It is an ordinary MQTT subscriber, so what it shows is what really crossed the broker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from rich.console import Console

from bus import Incoming
from wire import topics
from wire.topics import Channel

_STYLE = {
    Channel.READING: ("reading", "dim"),
    Channel.STATUS: ("status", "cyan"),
    Channel.CMD: ("command", "bold magenta"),
    Channel.ALERT: ("alert", "bold red"),
    Channel.ACK: ("hub ack", "green"),
    Channel.BROADCAST: ("broadcast", "bold yellow"),
    Channel.DEVICE_RECEIPT: ("speaker", "bold green"),
    Channel.RECEIPT: ("receipt", "green"),
    Channel.DEADLETTER: ("rejected", "red"),
    Channel.HEARTBEAT: ("heartbeat", "dim cyan"),
}


@dataclass
class Milestones:
    """When each step of the alarm path was first seen, in seconds since the demo started."""

    started: float = field(default_factory=time.monotonic)
    seen: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.seen.setdefault(name, time.monotonic() - self.started)


def _summary(channel: Channel, data: dict[str, object]) -> str | None:
    if channel is Channel.READING:
        values = data.get("values")
        if not isinstance(values, dict):
            return None
        lel = values.get("gas_lel")
        return f"{data.get('device')} gas {lel:.1f} %LEL" if isinstance(lel, float) else None
    if channel is Channel.CMD:
        return f"{data.get('action')} -> {data.get('device')}"
    if channel is Channel.ALERT:
        place = "/".join(str(p) for p in (data.get("building"), data.get("unit")) if p)
        return (
            f"{data.get('phase')} {data.get('severity')} {data.get('kind')} at "
            f"{place}: {data.get('message')}"
        )
    if channel is Channel.ACK:
        return f"stored {', '.join(str(i)[:13] for i in data.get('ids', []))}..."  # type: ignore[attr-defined]
    if channel is Channel.BROADCAST:
        return f"[{data.get('severity')}] {data.get('headline')}: {data.get('text')}"
    if channel in (Channel.DEVICE_RECEIPT, Channel.RECEIPT):
        digest = str(data.get("content_hash", ""))[:12]
        return f"{data.get('speaker')} {data.get('outcome')} (sha256 {digest}...)"
    if channel is Channel.STATUS:
        return f"{data.get('device')} {data.get('state')} {data.get('actuators') or ''}"
    if channel is Channel.DEADLETTER:
        return f"{data.get('reason')}: {data.get('detail')}"
    return None


class LiveConsole:
    """Prints the alarm path: reading -> alert -> siren -> hub -> broadcast -> receipt."""

    def __init__(
        self,
        console: Console,
        milestones: Milestones,
        *,
        on_receipt: Callable[[], None] | None = None,
        quiet: frozenset[Channel] = frozenset(),
    ) -> None:
        self.console = console
        self.milestones = milestones
        self.on_receipt = on_receipt
        self.quiet = quiet | {Channel.HEARTBEAT}
        self.alert_kinds: Counter[str] = Counter()
        self._last_reading_print = 0.0

    async def __call__(self, message: Incoming) -> None:
        try:
            channel = topics.parse(message.topic).channel
        except Exception:
            return
        if channel in self.quiet or not message.payload:
            return
        try:
            data = msgspec.json.decode(message.payload)
        except msgspec.DecodeError:
            return
        if not isinstance(data, dict):
            return
        text = _summary(channel, data)
        if text is None:
            return
        if channel is Channel.READING:
            # A quiet reading every 5 s; every reading once gas is present.
            values = data.get("values") or {}
            lel = values.get("gas_lel", 0.0) if isinstance(values, dict) else 0.0
            now = time.monotonic()
            if lel < 5.0 and now - self._last_reading_print < 5.0:
                return
            self._last_reading_print = now
        self._mark(channel, data)
        if channel is Channel.ALERT and data.get("phase") == "raised":
            self.alert_kinds[str(data.get("kind"))] += 1
        label, style = _STYLE[channel]
        elapsed = time.monotonic() - self.milestones.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/] [{style}]{label:>9}[/] {text}")
        if channel is Channel.RECEIPT and self.on_receipt is not None:
            self.on_receipt()

    def _mark(self, channel: Channel, data: dict[str, object]) -> None:
        if channel is Channel.ALERT and data.get("phase") == "raised":
            self.milestones.mark("alert")
        elif channel is Channel.CMD and data.get("action") == "siren_on":
            self.milestones.mark("siren")
        elif channel is Channel.ACK:
            self.milestones.mark("hub")
        elif channel is Channel.BROADCAST:
            self.milestones.mark("broadcast")
        elif channel is Channel.RECEIPT:
            self.milestones.mark("receipt")
