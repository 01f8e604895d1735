"""The simulated clock: one heap of due reports for every device, stepped in time order.

``Engine.transmissions()`` yields what the devices send, in arrival order, as fast as it can
compute them; the recorder writes them to a replay file, the MQTT runner paces them against
the wall clock (real time or N times faster). One process, one loop, no task per device: so it
scales to tens of thousands of devices.

Reporting: each device reports every ``interval_s`` (with jitter), phases spread at random.
While an incident touches a device, it also samples at its alarm interval and reports at once
when a value is abnormal (real detectors report on change), and event devices (an SOS
press, a door forced) report at the incident's own times.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

from firmware_sim.community import Community
from firmware_sim.families import SimDevice
from firmware_sim.faults import Transmission

_PERIODIC, _EXTRA = 0, 1


class Engine:
    """Steps a community's devices through simulated time."""

    def __init__(self, community: Community) -> None:
        self.community = community
        self.start = community.start
        self.end_s = (community.end - community.start).total_seconds()
        self.devices: list[SimDevice] = list(community.devices)
        self.counters: Counter[str] = Counter()
        self.now_s = 0.0
        self._last_sent: list[float] = [-1e18] * len(self.devices)
        self._heap: list[tuple[float, int, int, int]] = []
        self._pending: list[tuple[float, int, Transmission]] = []
        self._n = 0
        phase = random.Random(f"{community.seed}:phases")
        for index, device in enumerate(self.devices):
            self._push(phase.uniform(0.0, min(device.interval_s, 60.0)), index, _PERIODIC)
            for overlay in device.overlays:
                for at in overlay.reports:
                    offset = (at - self.start).total_seconds()
                    if 0.0 <= offset <= self.end_s:
                        self._push(offset, index, _EXTRA)

    def _push(self, due_s: float, index: int, kind: int) -> None:
        self._n += 1
        heapq.heappush(self._heap, (due_s, self._n, index, kind))

    def _watching(self, device: SimDevice, now: datetime, horizon_s: float) -> bool:
        """Does an incident touch the device between now and the next report?"""
        later = now + timedelta(seconds=horizon_s)
        return any(o.start <= later and (o.end is None or o.end > now) for o in device.overlays)

    def transmissions(self, until_s: float | None = None) -> Iterator[Transmission]:
        """What the devices send, in arrival order, up to ``until_s`` (default: the end)."""
        stop = self.end_s if until_s is None else min(until_s, self.end_s)
        heap, pending = self._heap, self._pending
        injector = self.community.injector
        faulty = injector.faults
        start = self.start
        last_sent = self._last_sent
        counters = self.counters
        while heap and heap[0][0] <= stop:
            due_s, _, index, kind = heapq.heappop(heap)
            while pending and pending[0][0] <= due_s:
                yield heapq.heappop(pending)[2]
            self.now_s = due_s
            device = self.devices[index]
            now = start + timedelta(seconds=due_s)
            faults = faulty.get(device.device_id) if faulty else None
            if faults and injector.silent(device, now):
                counters["silenced"] += 1
                if kind == _PERIODIC:
                    self._push(due_s + device.next_interval({}), index, _PERIODIC)
                continue
            values = device.values(now)
            alarming = device.alarming(values)
            interval = device.next_interval(values)
            if kind == _PERIODIC:
                step = interval
                probe = device.alarm_interval_s
                if probe is not None and device.overlays and self._watching(device, now, step):
                    step = min(step, probe)
                self._push(due_s + step, index, _PERIODIC)
                # A probe between reports: send only what is abnormal, or when a report is due.
                if not alarming and due_s - last_sent[index] < 0.9 * device.interval_s * (
                    1 - device.jitter
                ):
                    counters["probes"] += 1
                    continue
            if faults:
                values = injector.alter(device, values, now)
            reading = device.reading(now, values)
            last_sent[index] = due_s
            counters["readings"] += 1
            if not faults:
                yield Transmission(now, device.device_id, reading)
                continue
            for tx in injector.deliver(device, reading, interval):
                if tx.at <= now:
                    yield tx
                else:
                    self._n += 1
                    heapq.heappush(pending, ((tx.at - start).total_seconds(), self._n, tx))
        self.now_s = stop
        while pending and pending[0][0] <= stop:
            yield heapq.heappop(pending)[2]

    @property
    def progress(self) -> float:
        """The share of the scenario's time simulated so far, 0..1."""
        return 1.0 if self.end_s <= 0 else min(1.0, self.now_s / self.end_s)
