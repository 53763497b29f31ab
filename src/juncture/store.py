"""The project's state: one SQLite database under `.juncture/state/`."""

from __future__ import annotations

import os
import sqlite3
import time

__all__ = ["Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_revisions (
    event TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    seen_at TEXT NOT NULL
);
"""


class Store:
    def __init__(self, state_dir: str) -> None:
        directory = os.path.join(state_dir, "state")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, "juncture.db")
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        os.chmod(self.path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def revisions(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT event, revision FROM event_revisions"))

    def remember_revisions(self, revisions: dict[str, int]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO event_revisions (event, revision, seen_at) VALUES (?, ?, ?) "
                "ON CONFLICT(event) DO UPDATE SET revision = excluded.revision, seen_at = excluded.seen_at",
                [(event, revision, now) for event, revision in revisions.items()],
            )
