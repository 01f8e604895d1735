"""The hub's clocks: gateway outages, escalation and deliveries, checked on a tick.

All state lives in the database (``next_escalation_at``, ``deliveries.next_attempt_at``,
``gateways.down_since``), so nothing is lost when a hub restarts, and rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so with several hubs each timer fires once. Time
comes from the injected clock: tests call ``tick()`` after moving their clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from hub.clock import Clock, utc_now
from hub.errors import HubError
from hub.notify import Notifier
from hub.settings import HubSettings
from hub.store import Store

log = logging.getLogger(__name__)


class Timers:
    def __init__(self, store: Store, settings: HubSettings, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock
        self.interval_s = settings.timer_interval_s
        self.notifier = Notifier.from_settings(store, settings, clock=clock)
        self.counters: Counter[str] = Counter()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Check now rather than at the next tick (a new incident wants its first notice)."""
        self._wake.set()

    async def tick(self) -> None:
        """One pass over every timer. Never raises (except cancellation)."""
        now = self.clock()
        try:
            opened = await asyncio.to_thread(self.store.sweep_gateways, now)
            self.counters["gateway_incidents"] += len(opened)
            if self.notifier is not None:
                await self.notifier.tick(now)
        except HubError as exc:
            self.counters["errors"] += 1
            log.error("timers: %s", exc)
        except Exception:
            self.counters["errors"] += 1
            log.exception("timers: unexpected failure")
        self.counters["ticks"] += 1

    async def run(self) -> None:
        while True:
            await self.tick()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):  # not wait_for: see bus.tasks
                    await self._wake.wait()
            self._wake.clear()

    async def aclose(self) -> None:
        if self.notifier is not None:
            await self.notifier.aclose()
