"""The hub's lifespan runs the purge job: records past their period go soon after it starts,
the rest stay, and the pass is audited. SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bus.broker import Mosquitto
from hub.settings import Retention
from hub.store import Store
from tests.conftest import wait_for
from tests.integration.hub.support import FakeClock, app_for, running, settings_for, store_of
from wire import DeadLetter

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def dead_letter(clock: FakeClock, gateway: str) -> DeadLetter:
    return DeadLetter(
        site="s1", gateway=gateway, topic="t", reason="bad_json", detail="x", ts=clock.now, size=1
    )


async def test_the_running_hub_purges_what_is_past_its_period(
    mosquitto: Mosquitto, hub_database: str, clock: FakeClock
) -> None:
    seeded = Store(hub_database)
    seeded.create_schema()
    seeded.record_dead_letter(dead_letter(clock, "old-gw"), clock.now - timedelta(days=100))
    seeded.record_dead_letter(dead_letter(clock, "new-gw"), clock.now - timedelta(days=1))
    seeded.close()

    settings = replace(
        settings_for(mosquitto, hub_database, auth_required=False),
        retention=Retention(dead_letter_days=90),
    )
    app = app_for(settings, clock)
    async with running(app):
        store = store_of(app)
        await wait_for(
            lambda: [gw for (_, gw, _) in store.dead_letter_counts()] == ["new-gw"],
            timeout=30,
            what="the purge at start",
        )
        purges = [a for a in store.audit() if a.action == "retention.purged"]
        assert len(purges) == 1 and purges[0].detail == {"purged": {"dead_letters": 1}}
