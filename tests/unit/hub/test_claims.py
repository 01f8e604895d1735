"""Two hubs on one database claim each due delivery once: the claim is a read-then-write, so
on SQLite it must hold the write lock from its first read (BEGIN IMMEDIATE), as PostgreSQL's
FOR UPDATE SKIP LOCKED does per row."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from hub.channels import Notice
from hub.directory import PersonRecord
from hub.notify import Notifier
from hub.routing import parse_policy
from hub.store import Store
from tests.unit.hub.helpers import NOW, gas_event

POLICY = """\
version: 1
channels:
  ops: {type: webhook, url: "http://127.0.0.1:9/never"}
routes:
  - name: everything
    tiers:
      - {roles: [committee], channels: [ops]}
"""
PEOPLE = 250


class Unused:
    name = "ops"

    async def send(self, notice: Notice, person: PersonRecord) -> None:
        raise AssertionError("this test claims deliveries, it never sends them")

    async def aclose(self) -> None:
        return None


def test_two_hubs_claim_each_delivery_once(database_url: str, store: Store) -> None:
    for n in range(PEOPLE):
        store.add_person(f"member-{n}", f"Member {n}", "committee", email=None)
    store.record_alert_event(gas_event(), NOW)
    policy = parse_policy(POLICY)
    first = Notifier(store, policy, channels={"ops": Unused()})
    assert first.escalate(NOW) == 1  # tier 0: one delivery per committee member
    other = Store(database_url)
    try:
        notifiers = [first, Notifier(other, policy, channels={"ops": Unused()})]
        claimed: list[list[int]] = [[], []]
        start = threading.Barrier(2)

        def claim_all(n: int) -> None:
            start.wait()
            while batch := notifiers[n]._claim(NOW + timedelta(seconds=1)):
                claimed[n].extend(item[0] for item in batch)

        threads = [threading.Thread(target=claim_all, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        other.close()
    counts = Counter(claimed[0] + claimed[1])
    twice = sorted(d for d, c in counts.items() if c > 1)
    assert not twice, f"{len(twice)} deliveries claimed by both hubs"
    assert len(counts) == PEOPLE
