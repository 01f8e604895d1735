"""The durable outbox: an alert is committed to SQLite before it is published, and forgotten
only when the hub acknowledges it, so power, network or hub failures cannot lose it.

WAL mode with ``synchronous=FULL`` makes each commit durable on power loss; a commit costs
a few milliseconds on an SD card, which is nothing next to an alarm's deadline.

Retention: an entry is deleted when the hub acknowledges it (or, if it is not life-safety, when
it outgrows the bounds). ``secure_delete`` overwrites a deleted entry's bytes in the database
file, and ``prune`` checkpoints and truncates the write-ahead log now and then, so a delivered
alert does not linger on the gateway's card in free pages or old WAL frames.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.sqlite import connect

# Never-sent entries ``alone`` looks through for one not held for its alarm's order.
_HELD_SCAN = 64

# Made once the columns are there (an outbox from before keys gets its column first).
_INDEXES = """
-- The uplink's lag (the oldest entry) and the age bound read by creation time: without it
-- both scan the table (25 ms at 200,000 entries, a hub away for long).
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_ms);
-- An alarm's entries, sent or not: what ``alone`` asks on every alarm's commit.
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (key, attempts);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    life_safety  INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_sent_ms INTEGER,
    key          TEXT  -- the alert's key: one alarm's events reach the hub in their order
);
-- A rule's alert tracks, saved in the same transaction as the alert they caused: after a
-- crash the agent neither forgets a raised alarm nor raises it a second time. The stamp orders
-- them against the whole state saved beside (edge/snapshots.py). Before that file, the whole
-- state was kept here too, under "engine", and is still read from here once.
CREATE TABLE IF NOT EXISTS rule_state (
    name  TEXT PRIMARY KEY,
    blob  BLOB NOT NULL,
    stamp INTEGER NOT NULL DEFAULT 0
)
"""


def entries_on_disk(path: Path) -> int:
    """How many entries an outbox file holds, read only (none if there is no file)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (count,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    except sqlite3.OperationalError:  # a file from before any entry
        return 0
    finally:
        db.close()
    return int(count)


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    id: str
    topic: str
    payload: bytes
    life_safety: bool
    created_ms: int
    attempts: int
    last_sent_ms: int | None
    key: str | None = None


class Outbox:
    """A FIFO of messages awaiting the hub's ack. Thread-safe; every call is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = connect(path, durable=True, secure_delete=True)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "key" not in columns:  # an outbox from before keys were kept
            self._db.execute("ALTER TABLE outbox ADD COLUMN key TEXT")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(rule_state)")}
        if "stamp" not in columns:  # from before the parts were stamped
            self._db.execute("ALTER TABLE rule_state ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0")
        self._db.executescript(_INDEXES)
        self.dropped = 0  # entries dropped by the bounds (never life-safety ones)
        # Kept as the entries change, so that the agent's loop reads them (stats, heartbeat)
        # without SQL, and without waiting for the lock while the outbox's thread commits.
        with self._lock:
            self._depth, self._oldest = self._count()
        self._deleted_since_checkpoint = False
        self._last_checkpoint_ms: int | None = None

    def add(
        self,
        id: str,
        topic: str,
        payload: bytes,
        *,
        life_safety: bool,
        now_ms: int,
        state: tuple[str, int, bytes] | None = None,
        key: str | None = None,
    ) -> bool:
        """Store durably (with the rules' ``state``: name, stamp, blob; atomically); False if
        ``id`` is queued."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (id, topic, payload, life_safety, created_ms, key)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (id, topic, payload, int(life_safety), now_ms, key),
            )
            if state is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO rule_state (name, stamp, blob) VALUES (?, ?, ?)",
                    state,
                )
        if cursor.rowcount == 1:
            with self._lock:
                self._depth += 1
                if self._oldest is None or now_ms < self._oldest:
                    self._oldest = now_ms
        return cursor.rowcount == 1

    def _count(self) -> tuple[int, int | None]:
        """How many entries, and the oldest's creation time (with the lock held)."""
        count, oldest = self._db.execute("SELECT count(*), min(created_ms) FROM outbox").fetchone()
        return int(count), None if oldest is None else int(oldest)

    def _counted(self, gone: int) -> None:
        """``gone`` entries deleted (with the lock held)."""
        if gone:
            self._depth -= gone
            (oldest,) = self._db.execute("SELECT min(created_ms) FROM outbox").fetchone()
            self._oldest = None if oldest is None else int(oldest)

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[None]:
        """One commit for everything inside (the connection autocommits otherwise): durable,
        or (``durable=False``) without waiting for the disk. What is not durable can only be
        lost to a power cut before the next durable commit syncs it (the write-ahead log is
        one file, synced whole): a mark or a removal, so an alert is sent once more and the
        hub, which stores each id once, acknowledges it again. It spares ~0.2-0.5 ms of the
        outbox's thread that an alarm's own commit would otherwise queue behind."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full, I/O error) can leave the transaction open,
                    # and every later BEGIN would then fail: roll back whatever is open.
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    def load_state(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT blob FROM rule_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def save_state(self, name: str, blob: bytes, *, durable: bool = False) -> None:
        """A named blob beside the parts (a discovered device), committed without waiting
        for the disk unless ``durable``: the next durable commit (an alarm's) syncs it."""
        with self._transaction(durable=durable):
            self._db.execute(
                "INSERT OR REPLACE INTO rule_state (name, stamp, blob) VALUES (?, 0, ?)",
                (name, blob),
            )

    def drop_state(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM rule_state WHERE name = ?", (name,))

    def load_states(self, prefix: str) -> dict[str, tuple[int, bytes]]:
        """Every saved part whose name starts with ``prefix``, by name: its stamp and blob."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, stamp, blob FROM rule_state WHERE substr(name, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return {name: (int(stamp), bytes(blob)) for name, stamp, blob in rows}

    def prune(
        self, now_ms: int, *, max_age_ms: int, max_entries: int, checkpoint_ms: int = 60_000
    ) -> int:
        """Apply the bounds to entries that are not life-safety; return how many were dropped.

        At most every ``checkpoint_ms``, if entries were deleted since, the WAL is checkpointed
        and truncated, so delivered entries leave the disk (see the module's docstring)."""
        with self._lock:
            due = self._last_checkpoint_ms is None or (
                now_ms - self._last_checkpoint_ms >= checkpoint_ms
            )
            if self._deleted_since_checkpoint and due:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._deleted_since_checkpoint = False
                self._last_checkpoint_ms = now_ms
            aged = self._db.execute(
                "DELETE FROM outbox WHERE life_safety = 0 AND created_ms < ?",
                (now_ms - max_age_ms,),
            ).rowcount
            self._counted(aged)
            excess = max(0, self._depth - max_entries)
            over = 0
            if excess:
                over = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
                    " WHERE life_safety = 0 ORDER BY seq LIMIT ?)",
                    (excess,),
                ).rowcount
                self._counted(over)
        self.dropped += aged + over
        if aged + over:
            self._deleted_since_checkpoint = True
        return aged + over

    def oldest_ms(self) -> int | None:
        """When the oldest waiting entry was created: the uplink's lag."""
        return self._oldest

    def due(
        self,
        now_ms: int,
        retry_ms: int,
        limit: int = 100,
        max_backoff_ms: int = 60_000,
        *,
        sent: bool | None = None,
        excluding: Collection[str] = (),
    ) -> list[Entry]:
        """Entries never sent, or sent longer ago than their backoff, oldest first. The backoff
        doubles from ``retry_ms`` with each attempt, up to ``max_backoff_ms``. ``sent``: only
        entries never sent (False), only resends (True), or both (None). ``excluding``: not
        those of these alarms (keys)."""
        keys = list(excluding)
        # Only "?" placeholders are formatted into the query; the keys go as parameters.
        unheld = f" AND (key IS NULL OR key NOT IN ({', '.join('?' * len(keys))}))" if keys else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, topic, payload, life_safety, created_ms, attempts, last_sent_ms,"  # noqa: S608
                " key FROM outbox WHERE (last_sent_ms IS NULL"
                " OR last_sent_ms + min(?, ? * (1 << min(attempts - 1, 5))) <= ?)"
                f" AND (? IS NULL OR (attempts > 0) = ?){unheld} ORDER BY seq LIMIT ?",
                (max_backoff_ms, retry_ms, now_ms, sent, sent, *keys, limit),
            ).fetchall()
        return [
            Entry(r[0], r[1], r[2], bytes(r[3]), bool(r[4]), r[5], r[6], r[7], r[8]) for r in rows
        ]

    def alone(self, id: str, key: str | None, *, sent: Mapping[str, str | None] = {}) -> bool:
        """Whether sending ``id`` now overtakes nothing: no entry of its alarm (``key``) was
        sent and not yet acknowledged, and every entry never sent before it is held for its
        own alarm's order (an older event of that alarm awaits the hub's ack; the uplink
        passes such entries over too). ``sent``: entries published but not yet marked, with
        their alarms' keys (they count as sent)."""
        held = {other for other in sent.values() if other is not None}
        with self._lock:
            if key is not None:
                earlier = self._db.execute(
                    "SELECT 1 FROM outbox WHERE key = ? AND (attempts > 0 OR id != ?) LIMIT 1",
                    (key, id),
                ).fetchone()
                if earlier is not None:
                    return False
            # NOT EXISTS: a look-up in outbox_key per row read, where NOT IN built the set of
            # every sent alarm first (80 ms with 200,000 entries, on every alarm's commit).
            rows = self._db.execute(
                "SELECT id, key FROM outbox AS o WHERE attempts = 0 AND id != ? AND (key IS NULL"
                " OR NOT EXISTS (SELECT 1 FROM outbox WHERE key = o.key AND attempts > 0))"
                " ORDER BY seq LIMIT ?",
                (id, len(sent) + _HELD_SCAN),
            ).fetchall()
        waiting = [row for row in rows if row[0] not in sent and row[1] not in held]
        # Past the scan every entry seen was held: taken as waiting (the uplink sends it).
        return not waiting and len(rows) < len(sent) + _HELD_SCAN

    def replaying(self) -> set[str]:
        """The keys of entries sent and not yet acknowledged (a newer event of the same alarm
        must not overtake them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT key FROM outbox WHERE attempts > 0 AND key IS NOT NULL"
            ).fetchall()
        return {r[0] for r in rows}

    def expedite(self, keys: set[str]) -> None:
        """Make these alarms' unacknowledged entries due again now (a newer event waits)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE outbox SET last_sent_ms = NULL WHERE key = ? AND attempts > 0",
                [(k,) for k in sorted(keys)],
            )

    def mark_sent(self, ids: str | list[str], now_ms: int) -> None:
        """One attempt more for each of ``ids``, in one transaction."""
        with self._transaction(durable=False):
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_sent_ms = ? WHERE id = ?",
                [(now_ms, i) for i in ([ids] if isinstance(ids, str) else ids)],
            )

    def reset_backoff(self) -> None:
        """After a reconnect everything unacknowledged is due at once."""
        with self._lock:
            self._db.execute("UPDATE outbox SET last_sent_ms = NULL")

    def remove(self, ids: list[str]) -> list[str | None]:
        """Forget acknowledged entries (not durably: see _transaction); the alarm keys of
        those removed, one for each."""
        with self._transaction(durable=False):
            keys: list[str | None] = []
            for id in ids:  # SELECT, then DELETE: RETURNING needs SQLite 3.35
                row = self._db.execute("SELECT key FROM outbox WHERE id = ?", (id,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (id,))
                    keys.append(row[0])
        if keys:
            self._deleted_since_checkpoint = True
            with self._lock:
                self._counted(len(keys))
        return keys

    def depth(self) -> int:
        """How many entries wait for the hub's ack."""
        return self._depth

    def holds(self, id: str) -> bool:
        """Whether ``id`` still waits for the hub's ack."""
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM outbox WHERE id = ?", (id,)).fetchone() is not None
            )

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM outbox ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
