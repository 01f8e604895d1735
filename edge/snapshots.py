"""The rules' whole state (learned baselines, running timers, raised alarms), saved now and
then in a SQLite file of its own, so that a save (about 1 MB at 1,000 devices) never makes an
alarm's commit in the outbox wait behind it.

An alarm saves its own rule's alert tracks with the alert, in the outbox (``Outbox.add``), each
part stamped from one counter; a saved state carries the stamp of the last part taken before
it. A restore applies only the parts stamped after the state: the two files are written by two
threads, and a part may land before or after a state that already holds it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from edge.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (
    name   TEXT PRIMARY KEY,
    stamp  INTEGER NOT NULL,  -- the last alert part's stamp the state includes
    blob   BLOB NOT NULL
)
"""


class Snapshots:
    """Named blobs with their stamps. Thread-safe; each save is one durable transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Durable: parts older than a saved state are not applied on restore, so the state
        # must not be lost to a power cut that keeps them.
        # Secure delete: a replaced state (residents' routines among it) is overwritten.
        self._db = connect(path, durable=True, secure_delete=True)
        self._db.executescript(_SCHEMA)

    def save(self, name: str, blob: bytes, stamp: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO snapshot (name, stamp, blob) VALUES (?, ?, ?)",
                (name, stamp, blob),
            )

    def load(self, name: str) -> tuple[int, bytes] | None:
        """The saved blob with its stamp, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT stamp, blob FROM snapshot WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()
