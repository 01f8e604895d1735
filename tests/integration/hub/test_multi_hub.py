"""The issue's acceptance test: two hub processes on one shared subscription and one
PostgreSQL, 10,000 events with duplicates; each stored once and acked, each notification
delivered once (at a real SMTP server and a real webhook receiver)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bus.broker import Mosquitto
from hub.store import Store
from hub.tables import DeliveryRow
from tests.conftest import wait_for
from tests.integration.hub.multihub import Fleet, HubProcess, make_events
from tests.integration.hub.receivers import SmtpSink, WebhookReceiver
from tests.integration.hub.support import add_person

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EVENTS, DUPLICATES, GATEWAYS, KEYS = 10_000, 1_000, 10, 20

POLICY = """\
version: 1
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, sender: hub@anmin.test}}
  ops: {{type: webhook, url: "{webhook_url}"}}
routes:
  - name: everything
    tiers:
      - {{roles: [committee], channels: [email, ops]}}
"""


async def test_two_hubs_store_ack_and_notify_each_event_once(
    mosquitto: Mosquitto,
    postgres_url: str,
    smtp: SmtpSink,
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    store = Store(postgres_url)
    store.create_schema()
    add_person(store, "committee", "committee", email="committee@anmin.test")
    policy = tmp_path / "routing.yaml"
    policy.write_text(POLICY.format(smtp_port=smtp.port, webhook_url=webhook.url))
    hubs = [
        HubProcess(
            f"hub-{n}",
            mosquitto.broker,
            postgres_url,
            policy=policy,
            log_path=tmp_path / f"hub-{n}.log",
        )
        for n in (1, 2)
    ]
    unique, order = make_events(
        EVENTS, duplicates=DUPLICATES, gateways=GATEWAYS, keys_per_gateway=KEYS, site="site-m"
    )
    fleet = Fleet(mosquitto.broker, "site-m", [f"gw-{g}" for g in range(GATEWAYS)])
    try:
        for hub in hubs:
            hub.start()
        for hub in hubs:
            await hub.wait_ready()
        await fleet.start()
        started = time.perf_counter()
        await fleet.send(order)
        print(f"\nsent in {time.perf_counter() - started:.1f}s")  # noqa: T201
        want = {e.id for e in unique}
        await wait_for(
            lambda: want <= fleet.acked.keys(), timeout=600, interval=0.2, what="every ack"
        )
        elapsed = time.perf_counter() - started
        # Every event stored once; each resend acked again (the edge missed the first ack).
        stored = store.alerts(limit=EVENTS * 2)
        assert len(stored) == len(unique) == len({a.id for a in stored})
        sent = Counter(e.id for e in order)
        await wait_for(
            lambda: all(fleet.acked.get(i, 0) >= n for i, n in sent.items()),
            timeout=60,
            what="the duplicates' acks",
        )
        incidents = store.incidents(limit=10_000)
        assert len(incidents) == GATEWAYS * KEYS
        assert sum(i.event_count for i in incidents) == len(unique)

        # One e-mail and one webhook call per incident, and no more.
        await wait_for(
            lambda: smtp.count() >= len(incidents) and webhook.count() >= len(incidents),
            timeout=120,
            what="every notification",
        )

        def statuses() -> dict[str, int]:
            with store.reading() as session:
                rows = session.execute(
                    select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status)
                )
                return {status: count for status, count in rows}

        # A hub marks a delivery sent after the receiver has answered: wait for the marks.
        await wait_for(
            lambda: "sending" not in statuses() and "queued" not in statuses(),
            timeout=60,
            what="every delivery marked",
        )
        assert statuses() == {"sent": 2 * len(incidents)}
        mailed = Counter(m["X-Anmin-Incident"] for m in smtp.messages)
        hooked = Counter(b["incident"]["id"] for b in webhook.bodies)
        assert set(mailed) == set(hooked) == {i.id for i in incidents}
        assert set(mailed.values()) == set(hooked.values()) == {1}
        # Both hubs took a share of the load (the broker splits the shared subscription).
        for hub in hubs:
            assert "Traceback" not in hub.log(), hub.log()
        print(f"\n{len(order)} events in {elapsed:.1f}s: {len(order) / elapsed:.0f} events/s")  # noqa: T201
    finally:
        await fleet.close()
        for hub in hubs:
            hub.stop()
        store.close()
