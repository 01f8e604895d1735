"""The outbox: durable FIFO, backoff, bounds that never drop life safety, state with alerts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.outbox import Outbox


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite3")


def test_entries_come_out_in_order_and_leave_on_ack(outbox: Outbox) -> None:
    for i in range(3):
        assert outbox.add(f"id-{i}", "t", b"x", life_safety=True, now_ms=1000 + i)
    assert not outbox.add("id-1", "t", b"x", life_safety=True, now_ms=2000)  # a repeat
    assert [e.id for e in outbox.due(5000, retry_ms=1000)] == ["id-0", "id-1", "id-2"]
    assert len(outbox.remove(["id-0", "id-2", "unknown"])) == 2
    assert outbox.ids() == ["id-1"]
    assert outbox.holds("id-1") and not outbox.holds("id-0")


def test_backoff_doubles_and_is_capped(outbox: Outbox) -> None:
    outbox.add("a", "t", b"x", life_safety=True, now_ms=0)
    sent_at = 0
    gaps = []
    for _ in range(6):
        outbox.mark_sent("a", sent_at)
        wait = next(w for w in range(0, 100_000, 100) if outbox.due(sent_at + w, 1000, 10, 5000))
        gaps.append(wait)
        sent_at += wait
    assert gaps == [1000, 2000, 4000, 5000, 5000, 5000]
    outbox.mark_sent("a", sent_at)
    outbox.reset_backoff()
    assert [e.id for e in outbox.due(sent_at, 1000)] == ["a"]


def test_new_entries_and_resends_are_read_apart(outbox: Outbox) -> None:
    for i in range(4):
        outbox.add(f"id-{i}", "t", b"x", life_safety=True, now_ms=i)
    outbox.mark_sent(["id-0", "id-2"], 10)
    outbox.reset_backoff()  # the resends are due at once, beside the new ones
    assert [e.id for e in outbox.due(20, 1000, sent=False)] == ["id-1", "id-3"]
    assert [(e.id, e.attempts) for e in outbox.due(20, 1000, sent=True)] == [
        ("id-0", 1),
        ("id-2", 1),
    ]
    assert [e.id for e in outbox.due(20, 1000)] == ["id-0", "id-1", "id-2", "id-3"]


def test_bounds_drop_only_what_is_not_life_safety(outbox: Outbox) -> None:
    for i in range(5):
        outbox.add(f"safety-{i}", "t", b"x", life_safety=True, now_ms=i)
        outbox.add(f"other-{i}", "t", b"x", life_safety=False, now_ms=i)
    dropped = outbox.prune(10, max_age_ms=1_000_000, max_entries=7)
    assert dropped == 3
    assert [i for i in outbox.ids() if i.startswith("other")] == ["other-3", "other-4"]
    # By age: old non-life-safety entries go, old life-safety ones stay, however old.
    dropped = outbox.prune(10_000_000, max_age_ms=1000, max_entries=100)
    assert dropped == 2
    assert outbox.ids() == [f"safety-{i}" for i in range(5)]
    assert outbox.dropped == 5


def test_rule_state_is_committed_with_the_alert_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path)
    first.add("a", "t", b"x", life_safety=True, now_ms=1, state=("gas/1", 7, b'{"d":1}'))
    first.close()
    again = Outbox(path)
    assert again.load_states("gas/") == {"gas/1": (7, b'{"d":1}')}
    assert again.ids() == ["a"]


def test_an_outbox_from_before_stamps_reads_its_parts_as_stamp_0(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE rule_state (name TEXT PRIMARY KEY, blob BLOB NOT NULL);"
        "INSERT INTO rule_state VALUES ('engine', x'01'), ('gas/1', x'02');"
    )
    old.commit()
    old.close()
    outbox = Outbox(path)
    assert outbox.load_state("engine") == b"\x01"
    assert outbox.load_states("gas/") == {"gas/1": (0, b"\x02")}


def test_the_alarms_being_replayed_are_known_and_can_be_made_due(outbox: Outbox) -> None:
    outbox.add("a1", "t", b"x", life_safety=True, now_ms=0, key="gas:1")
    outbox.add("b1", "t", b"x", life_safety=True, now_ms=0, key="gas:2")
    outbox.add("a2", "t", b"x", life_safety=True, now_ms=1, key="gas:1")
    assert outbox.replaying() == set()
    outbox.mark_sent(["a1", "b1"], 10)
    assert outbox.replaying() == {"gas:1", "gas:2"}
    assert outbox.due(20, 1000, sent=True) == []  # not due for a second
    outbox.expedite({"gas:1"})
    assert [e.id for e in outbox.due(20, 1000, sent=True)] == ["a1"]
    assert [(e.id, e.key) for e in outbox.due(20, 1000, sent=False)] == [("a2", "gas:1")]


def test_an_outbox_from_before_keys_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " topic TEXT NOT NULL, payload BLOB NOT NULL, life_safety INTEGER NOT NULL,"
        " created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_sent_ms INTEGER)"
    )
    db.execute(
        "INSERT INTO outbox (id, topic, payload, life_safety, created_ms) VALUES "
        "('old', 't', x'00', 1, 5)"
    )
    db.commit()
    db.close()
    outbox = Outbox(path)
    assert [(e.id, e.key) for e in outbox.due(10, 1000)] == [("old", None)]
    outbox.add("new", "t", b"x", life_safety=True, now_ms=6, key="gas:1")
    assert [e.key for e in outbox.due(10, 1000)] == [None, "gas:1"]
    outbox.close()


def test_an_entry_is_alone_when_nothing_waits_before_it_nor_for_its_alarms_ack(
    outbox: Outbox,
) -> None:
    outbox.add("a1", "t", b"x", life_safety=True, now_ms=0, key="gas:1")
    assert outbox.alone("a1", "gas:1")
    outbox.add("b1", "t", b"x", life_safety=True, now_ms=1, key="gas:2")
    assert not outbox.alone("b1", "gas:2")  # a1 is not sent yet: b1 would overtake it
    assert outbox.alone("b1", "gas:2", sent={"a1": "gas:1"})  # published, not yet marked
    outbox.add("a9", "t", b"x", life_safety=True, now_ms=1, key="gas:1")
    assert not outbox.alone("a9", "gas:1", sent={"a1": "gas:1"})  # an event of its alarm is out
    # a9 waits behind a1 (its alarm's order), as the uplink leaves it: b1 overtakes neither.
    assert outbox.alone("b1", "gas:2", sent={"a1": "gas:1"})
    outbox.remove(["a9"])
    outbox.mark_sent(["a1"], 2)
    assert outbox.alone("b1", "gas:2")
    outbox.mark_sent(["b1"], 3)
    outbox.add("a2", "t", b"x", life_safety=True, now_ms=4, key="gas:1")
    assert not outbox.alone("a2", "gas:1")  # a1 waits for the hub's ack
    outbox.remove(["a1"])
    assert outbox.alone("a2", "gas:1")


def test_entries_held_for_their_alarms_order_are_not_overtaken_by_being_passed(
    outbox: Outbox,
) -> None:
    """A clear waiting for its raise's ack (the hub away a while) holds only its own alarm:
    a new alarm still goes at once, as the uplink would send it past the held one."""
    outbox.add("raise", "t", b"x", life_safety=True, now_ms=0, key="silent:1")
    outbox.mark_sent(["raise"], 1)  # out, no ack yet
    outbox.add("clear", "t", b"x", life_safety=False, now_ms=2, key="silent:1")
    outbox.add("gas", "t", b"x", life_safety=True, now_ms=3, key="gas:1")
    assert outbox.alone("gas", "gas:1")
    assert not outbox.alone("clear", "silent:1")
    outbox.add("plain", "t", b"x", life_safety=False, now_ms=4)  # not held: it goes first
    assert not outbox.alone("gas", "gas:1")
    outbox.remove(["plain", "gas"])
    for n in range(100):  # however many wait behind the raise
        outbox.add(f"c{n}", "t", b"x", life_safety=False, now_ms=5 + n, key="silent:1")
    outbox.add("gas2", "t", b"x", life_safety=True, now_ms=200, key="gas:2")
    assert outbox.alone("gas2", "gas:2")
    # Held behind one published and not yet marked: looked through up to a bound, past
    # which they are taken as waiting (the uplink then sends the new one).
    outbox.add("fire", "t", b"x", life_safety=True, now_ms=300, key="fire:1")
    sent: dict[str, str | None] = {"fire": "fire:1"}
    outbox.add("fire-update", "t", b"x", life_safety=True, now_ms=301, key="fire:1")
    outbox.add("co", "t", b"x", life_safety=True, now_ms=302, key="co:1")
    outbox.remove(["gas2"])
    assert outbox.alone("co", "co:1", sent=sent)
    for n in range(100):
        outbox.add(f"f{n}", "t", b"x", life_safety=False, now_ms=303 + n, key="fire:1")
    outbox.add("co2", "t", b"x", life_safety=True, now_ms=500, key="co:2")
    outbox.remove(["co"])
    assert not outbox.alone("co2", "co:2", sent=sent)


def test_due_can_leave_out_held_alarms(outbox: Outbox) -> None:
    for n in range(5):
        outbox.add(f"h{n}", "t", b"x", life_safety=False, now_ms=n, key="flap:1")
    outbox.add("gas", "t", b"x", life_safety=True, now_ms=9, key="gas:1")
    outbox.add("plain", "t", b"x", life_safety=False, now_ms=10)
    assert [e.id for e in outbox.due(100, 0, 2, sent=False)] == ["h0", "h1"]
    held = outbox.due(100, 0, 2, sent=False, excluding={"flap:1"})
    assert [e.id for e in held] == ["gas", "plain"]


def test_depth_and_oldest_are_kept_as_entries_come_and_go(tmp_path: Path) -> None:
    """The loop reads them without SQL; they must stay what the table says, through adds,
    repeats, acks, both bounds and a reopening."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)

    def table() -> tuple[int, int | None]:
        db = sqlite3.connect(path)
        try:
            count, oldest = db.execute("SELECT count(*), min(created_ms) FROM outbox").fetchone()
        finally:
            db.close()
        return count, oldest

    assert (outbox.depth(), outbox.oldest_ms()) == (0, None) == table()
    for i in range(6):
        outbox.add(f"safety-{i}", "t", b"x", life_safety=True, now_ms=100 + i)
        outbox.add(f"other-{i}", "t", b"x", life_safety=False, now_ms=50 + i)
    outbox.add("other-0", "t", b"x", life_safety=False, now_ms=1)  # a repeat: not stored
    assert (outbox.depth(), outbox.oldest_ms()) == (12, 50) == table()
    outbox.remove(["other-0", "other-1", "unknown"])
    assert (outbox.depth(), outbox.oldest_ms()) == (10, 52) == table()
    outbox.prune(1_000, max_age_ms=10_000, max_entries=8)  # the two oldest others go
    assert (outbox.depth(), outbox.oldest_ms()) == (8, 54) == table()
    outbox.prune(1_000, max_age_ms=900, max_entries=100)  # the rest of them, by age
    assert (outbox.depth(), outbox.oldest_ms()) == (6, 100) == table()
    outbox.close()
    reopened = Outbox(path)
    try:
        assert (reopened.depth(), reopened.oldest_ms()) == (6, 100) == table()
        reopened.remove([f"safety-{i}" for i in range(6)])
        assert (reopened.depth(), reopened.oldest_ms()) == (0, None) == table()
    finally:
        reopened.close()
