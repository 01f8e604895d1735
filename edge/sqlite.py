"""The gateway's SQLite files (outbox, rule state, telemetry buffer), opened one way."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, *, durable: bool, secure_delete: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that any thread may use
    under its owner's lock, in WAL mode: readers never block the writer. ``durable``: each
    commit waits for the disk (``synchronous=FULL``, set whatever SQLite's build default),
    so a power cut cannot undo it.
    ``secure_delete``: deleted rows are overwritten, not left in free pages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if durable:
        db.execute("PRAGMA synchronous=FULL")
    if secure_delete:
        db.execute("PRAGMA secure_delete=ON")
    return db
