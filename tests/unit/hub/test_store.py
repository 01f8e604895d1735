from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from hub.store import Recorded, Store
from tests.unit.hub.helpers import NOW, event_id, gas_event, receipt
from wire import AlertEvent, DeadLetter, Heartbeat, Phase, Severity


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'data' / 'hub.sqlite3'}")
    store.create_schema()
    assert (tmp_path / "data" / "hub.sqlite3").exists()
    with store.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    store.close()


def test_record_alert_is_idempotent_on_the_event_id(store: Store) -> None:
    event = gas_event(severity=Severity.SEVERE)
    assert store.record_alert(event, NOW) == (True, None)
    assert store.record_alert(event, NOW + timedelta(seconds=5)) == (False, None)
    alerts = store.alerts()
    assert [a.id for a in alerts] == [event.id]
    # The repeat changed nothing, not even the time it was received.
    assert alerts[0].received_at == NOW
    assert alerts[0].ts == event.ts and alerts[0].ts.tzinfo is not None
    assert alerts[0].evidence == {"gas_lel": 42.0}


def test_high_gas_raised_gives_exactly_one_unpublished_broadcast(store: Store) -> None:
    event = gas_event()
    stored, broadcast = store.record_alert(event, NOW)
    assert stored and broadcast is not None and broadcast.cause == event.id
    assert store.record_alert(event, NOW) == (False, None)

    broadcasts = store.broadcasts()
    assert [b.id for b in broadcasts] == [broadcast.id]
    assert broadcasts[0].published_at is None
    assert [b.id for b in store.unpublished_broadcasts()] == [broadcast.id]

    store.mark_published(broadcast.id, NOW + timedelta(seconds=1))
    assert store.unpublished_broadcasts() == []
    assert store.broadcasts()[0].published_at == NOW + timedelta(seconds=1)


def test_stored_payload_is_the_wire_broadcast(store: Store) -> None:
    from wire import Broadcast, Codec

    _, broadcast = store.record_alert(gas_event(), NOW)
    assert broadcast is not None
    payload = store.unpublished_broadcasts()[0].payload
    assert Codec().decode(payload, Broadcast, NOW) == broadcast


def test_expired_broadcasts_are_not_pending(store: Store) -> None:
    _, broadcast = store.record_alert(gas_event(), NOW)
    assert broadcast is not None and broadcast.expires is not None
    assert len(store.unpublished_broadcasts(NOW + timedelta(minutes=59))) == 1
    assert store.unpublished_broadcasts(broadcast.expires + timedelta(seconds=1)) == []


def test_severe_gas_gives_no_broadcast(store: Store) -> None:
    stored, broadcast = store.record_alert(gas_event(severity=Severity.SEVERE), NOW)
    assert stored and broadcast is None
    assert store.broadcasts() == []


def test_receipts_are_idempotent_and_listed_with_their_broadcast(store: Store) -> None:
    _, broadcast = store.record_alert(gas_event(), NOW)
    assert broadcast is not None
    first = receipt(broadcast.id)
    assert store.record_receipt(first, site="s1", gateway="g1", now=NOW)
    assert not store.record_receipt(first, site="s1", gateway="g1", now=NOW)
    other = receipt(broadcast.id, speaker="spk-2")
    assert store.record_receipt(other, site="s1", gateway="g1", now=NOW)

    [listed] = store.broadcasts()
    assert [(r.speaker, r.outcome) for r in listed.receipts] == [
        ("spk-1", "played"),
        ("spk-2", "played"),
    ]
    assert store.broadcast(broadcast.id) == listed
    assert store.broadcast("0190b4e0-0000-7000-8000-000000000000") is None


def test_alerts_are_listed_newest_first_with_paging(store: Store) -> None:
    events = [gas_event(severity=Severity.SEVERE, at=NOW + timedelta(minutes=m)) for m in (2, 0, 1)]
    for event in events:
        store.record_alert(event, NOW)
    listed = store.alerts()
    assert [a.ts for a in listed] == sorted((e.ts for e in events), reverse=True)
    assert [a.id for a in store.alerts(limit=1, offset=1)] == [listed[1].id]
    assert store.alerts(limit=10, offset=3) == []


def test_heartbeat_upserts_and_ignores_older_ones(store: Store) -> None:
    def beat(minutes: int, depth: int) -> Heartbeat:
        return Heartbeat(
            site="s1",
            gateway="g1",
            state="online",
            ts=NOW + timedelta(minutes=minutes),
            outbox_depth=depth,
        )

    store.record_heartbeat(beat(1, 5), NOW)
    store.record_heartbeat(beat(2, 0), NOW)
    store.record_heartbeat(beat(0, 99), NOW)  # a late, retained one
    [gateway] = store.gateways()
    assert (gateway.outbox_depth, gateway.last_seen) == (0, NOW + timedelta(minutes=2))
    assert gateway.last_seen.tzinfo is UTC


def test_dead_letters_are_counted_by_reason(store: Store) -> None:
    def letter(reason: str) -> DeadLetter:
        return DeadLetter(
            site="s1", gateway="g1", topic="x", reason=reason, detail="", ts=NOW, size=3
        )

    for reason in ("malformed_json", "malformed_json", "unknown_device"):
        store.record_dead_letter(letter(reason), NOW)
    assert store.dead_letter_counts() == {
        ("s1", "g1", "malformed_json"): 2,
        ("s1", "g1", "unknown_device"): 1,
    }


def test_a_batch_of_dead_letters_that_races_another_hub_is_counted_on_the_second_try(
    tmp_path: Path,
) -> None:
    class Raced(Store):
        """The first batch finds its row inserted by another hub meanwhile."""

        raced = False

        def _add_dead_letter_counts(
            self, counts: Mapping[tuple[str, str, str], int], now: datetime
        ) -> None:
            if not self.raced:
                self.raced = True
                self._add_dead_letter_counts({("s1", "g1", "malformed_json"): 1}, now)
                raise IntegrityError("INSERT", {}, Exception("duplicate key"))
            super()._add_dead_letter_counts(counts, now)

    store = Raced(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    store.create_schema()
    try:
        letter = DeadLetter(
            site="s1", gateway="g1", topic="x", reason="malformed_json", detail="", ts=NOW,
            size=3, repeats=499,
        )  # fmt: skip
        store.record_dead_letters([letter, letter], NOW)
        assert store.dead_letter_counts() == {("s1", "g1", "malformed_json"): 1 + 1000}
    finally:
        store.close()


def test_in_memory_sqlite_works_across_threads() -> None:
    import threading

    store = Store("sqlite://")
    store.create_schema()
    worker = threading.Thread(target=store.record_alert, args=(gas_event(), NOW))
    worker.start()
    worker.join()
    assert len(store.alerts()) == 1
    store.close()


def test_one_alarm_is_broadcast_once_until_it_clears(store: Store) -> None:
    from wire import Phase

    first = gas_event(severity=Severity.SEVERE)
    escalated = gas_event(phase=Phase.UPDATED, at=NOW + timedelta(seconds=5))
    again = gas_event(phase=Phase.UPDATED, at=NOW + timedelta(seconds=9))
    assert store.record_alert(first, NOW)[1] is None
    stored, broadcast = store.record_alert(escalated, NOW)
    assert stored and broadcast is not None and broadcast.cause == escalated.id
    assert store.record_alert(again, NOW) == (True, None)
    cleared = gas_event(phase=Phase.CLEARED, at=NOW + timedelta(minutes=5))
    assert store.record_alert(cleared, NOW)[1] is None
    # A new leak after the clear is a new alarm, and is broadcast again.
    later = gas_event(at=NOW + timedelta(minutes=10))
    assert store.record_alert(later, NOW)[1] is not None
    assert len(store.broadcasts()) == 2


def test_a_batch_is_stored_once_each_with_one_incident_per_cause(store: Store) -> None:
    first = gas_event(severity=Severity.SEVERE)
    escalated = gas_event(at=NOW + timedelta(seconds=1))  # same cause, now Extreme
    other = gas_event(gateway="g2", severity=Severity.SEVERE)
    store.record_alert_event(other, NOW)  # stored before: a repeat in the batch
    batch = [first, escalated, first, other]  # ... and one in the batch itself
    recorded = store.record_alert_events(batch, NOW)
    assert [r.stored for r in recorded] == [True, True, False, False]
    assert recorded[0].incident_opened and not recorded[1].incident_opened
    assert recorded[0].incident_id == recorded[1].incident_id is not None
    # The Extreme escalation broadcasts once, as it would event by event.
    assert recorded[0].broadcast is None and recorded[1].broadcast is not None
    assert {a.id for a in store.alerts()} == {first.id, escalated.id, other.id}
    assert len(store.incidents()) == 2
    assert len(store.unpublished_broadcasts()) == 1


def test_a_batch_gives_what_one_by_one_gives(store: Store, tmp_path: Path) -> None:
    one_by_one = Store(f"sqlite:///{tmp_path / 'alone.sqlite3'}")
    one_by_one.create_schema()
    events = [
        gas_event(gateway=f"g{n % 3}", at=NOW + timedelta(seconds=n), severity=severity)
        for n, severity in enumerate([Severity.SEVERE, Severity.EXTREME] * 4)
    ]
    batched = store.record_alert_events(events, NOW)
    alone = [one_by_one.record_alert_event(e, NOW) for e in events]
    one_by_one.close()

    def shape(r: Recorded) -> tuple[bool, bool, bool]:
        return (r.stored, r.incident_opened, r.broadcast is not None)

    assert [shape(r) for r in batched] == [shape(r) for r in alone]


def _incident_shape(store: Store) -> list[tuple[str, str, str, int, bool, str]]:
    """Each incident's cause, state, severity, event count and clear, oldest first."""
    return sorted(
        (i.gateway, i.key, i.state, i.event_count, i.cleared_at is not None, i.severity)
        for i in store.incidents(limit=1000)
    )


def test_duplicates_within_and_across_batches_are_stored_once(store: Store) -> None:
    events = [
        gas_event(
            gateway=f"g{n % 2}",
            phase=Phase.RAISED if n < 2 else Phase.UPDATED,
            at=NOW + timedelta(seconds=n),
            severity=Severity.SEVERE,
        )
        for n in range(10)
    ]
    first = store.record_alert_events([*events[:6], events[0], events[5]], NOW)
    assert [r.stored for r in first] == [True] * 6 + [False, False]
    second = store.record_alert_events([events[5], *events[6:], events[9], events[1]], NOW)
    assert [r.stored for r in second] == [False, True, True, True, True, False, False]
    # A repeat is stored nowhere and counts in no incident.
    repeats = [r for r in first + second if not r.stored]
    assert all(r.incident_id is None and not r.incident_opened for r in repeats)
    assert sorted(a.id for a in store.alerts()) == sorted(e.id for e in events)
    assert _incident_shape(store) == [
        ("g0", events[0].key, "open", 5, False, "Severe"),
        ("g1", events[1].key, "open", 5, False, "Severe"),
    ]
    [g0] = [i for i in store.incidents() if i.gateway == "g0"]
    assert {e.id for e in store.incident_events(g0.id)} == {e.id for e in events[0::2]}


def test_a_batch_of_many_causes_groups_each_as_one_by_one_does(
    store: Store, tmp_path: Path
) -> None:
    """Raises, updates, escalations, clears, raises again, a resolved incident, an event past
    the window and one out of order: the incidents, their counts and the audit log are the same
    whether the events come in one batch or one by one."""
    causes = [("g1", "kitchen"), ("g1", "hall"), ("g2", "kitchen")]
    script: list[tuple[int, Phase, Severity, int]] = [  # (cause, phase, severity, seconds)
        (0, Phase.RAISED, Severity.SEVERE, 0),
        (1, Phase.RAISED, Severity.MODERATE, 1),
        (0, Phase.UPDATED, Severity.EXTREME, 2),
        (2, Phase.CLEARED, Severity.MINOR, 3),  # a clear with no incident
        (1, Phase.CLEARED, Severity.MODERATE, 4),
        (1, Phase.RAISED, Severity.SEVERE, 5),  # raised again within the window
        (0, Phase.UPDATED, Severity.SEVERE, 1),  # out of order, lower severity
        (2, Phase.RAISED, Severity.SEVERE, 6),
        (2, Phase.UPDATED, Severity.SEVERE, 3600 * 2),  # past the window: a new incident
        (0, Phase.CLEARED, Severity.SEVERE, 3600 * 3),  # past the window: belongs to none
    ]

    def make(n: int, cause: int, phase: Phase, severity: Severity, seconds: int) -> AlertEvent:
        gateway, device = causes[cause]
        at = NOW + timedelta(seconds=seconds, microseconds=n)
        return AlertEvent(
            id=event_id(at), key=f"gas_high:s1/{gateway}/{device}", phase=phase,
            severity=severity, kind="gas", rule="gas_high", site="s1", gateway=gateway,
            device=device, building="3", unit="301", ts=at, evidence={}, message=f"m{n}",
        )  # fmt: skip

    events = [make(n, *step) for n, step in enumerate(script)]
    one_by_one = Store(f"sqlite:///{tmp_path / 'alone.sqlite3'}")
    one_by_one.create_schema()
    try:
        # Resolved before the batch: a raise of that cause opens a new incident, in both.
        resolved = gas_event(gateway="g3", severity=Severity.SEVERE)
        later = gas_event(gateway="g3", severity=Severity.SEVERE, at=NOW + timedelta(seconds=9))
        for target in (store, one_by_one):
            recorded = target.record_alert_event(resolved, NOW)
            assert recorded.incident_id is not None
            target.resolve_incident(recorded.incident_id, "admin", NOW)
        batched = store.record_alert_events([*events, later, events[2]], NOW)
        alone = [one_by_one.record_alert_event(e, NOW) for e in [*events, later, events[2]]]

        def shape(r: Recorded) -> tuple[bool, bool, bool, bool]:
            return (r.stored, r.incident_opened, r.incident_id is None, r.broadcast is None)

        assert [shape(r) for r in batched] == [shape(r) for r in alone]
        assert _incident_shape(store) == _incident_shape(one_by_one)
        assert len(store.incidents()) == 6

        def actions(target: Store) -> list[tuple[str, str]]:
            return sorted((a.action, a.actor) for a in target.audit())

        assert actions(store) == actions(one_by_one)
    finally:
        one_by_one.close()


def test_two_hubs_storing_overlapping_batches_store_each_event_once(
    database_url: str, store: Store
) -> None:
    """Two stores (two hub processes) take overlapping batches of the same causes at once, as a
    shared subscription hands them out: each event stored once, one incident per cause."""
    events = [
        gas_event(
            gateway=f"g{n % 3}",
            phase=Phase.RAISED if n < 3 else Phase.UPDATED,
            at=NOW + timedelta(milliseconds=n),
            severity=Severity.SEVERE,
        )
        for n in range(600)
    ]
    other = Store(database_url)
    stores = [store, other]
    results: list[list[Recorded]] = [[], []]
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def record(n: int) -> None:
        try:
            start.wait()
            # Each hub sees every event once, and half of them twice (the resends).
            mine = events[n::2] + events[: len(events) // 2]
            for at in range(0, len(mine), 40):
                results[n].extend(stores[n].record_alert_events(mine[at : at + 40], NOW))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=record, args=(n,)) for n in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()
    assert not failures and not any(thread.is_alive() for thread in threads)
    stored = sum(r.stored for r in results[0] + results[1])
    assert stored == len(events)
    assert sum(r.incident_opened for r in results[0] + results[1]) == 3
    assert len(store.alerts(limit=1000)) == len(events)
    assert _incident_shape(store) == [
        (f"g{g}", events[0].key.replace("g0", f"g{g}"), "open", 200, False, "Severe")
        for g in range(3)
    ]
