"""The project's state: one SQLite database under `.juncture/state/` (WAL), shared by every juncture
process of the project: the KV store (secrets sealed by the vault), run history, and the event
revisions `check` remembers.

Every write is one `BEGIN IMMEDIATE` transaction, so two processes at once wait for each other (up to
30 s) instead of failing, and a process killed mid-write leaves the last committed state.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .outputs import Entry
from .record import record
from .vault import StateError, Vault, load_vault

__all__ = ["KvItem", "StateError", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_revisions (
    event TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    secret INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    run_id TEXT,
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    verb TEXT NOT NULL,
    stage TEXT,
    event TEXT,
    version TEXT,
    who TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    pid INTEGER,
    pid_start TEXT
);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT,
    event TEXT,
    name TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    output_tail TEXT,
    PRIMARY KEY (run_id, seq)
);
"""

_RUN_COLUMNS = (
    "id",
    "verb",
    "stage",
    "event",
    "version",
    "who",
    "started_at",
    "ended_at",
    "status",
    "exit_code",
)
_ITEM_COLUMNS = (
    "target",
    "kind",
    "phase",
    "event",
    "name",
    "started_at",
    "ended_at",
    "status",
    "exit_code",
    "output_tail",
)


@record
class KvItem:
    ns: str
    key: str
    value: str | None  # None: a secret that was not asked to be opened
    secret: bool
    updated_at: float


class Store:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        directory = os.path.join(state_dir, "state")
        self.path = os.path.join(directory, "juncture.db")
        self._vault: Vault | None = None
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            os.chmod(self.path, 0o600)
            self._prepare()
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        except OSError as exc:
            raise StateError(f"{self.path}: {exc.strerror or exc}") from None

    def _prepare(self, tries: int = 50) -> None:
        # While another run's last connection closes, it checkpoints and removes the WAL under an
        # exclusive lock, and switching to WAL here can then fail at once as "locked", without waiting
        # for the busy timeout: a moment to wait, not a broken database.
        for attempt in range(tries):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed state
                self.db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == tries - 1:
                    raise
                time.sleep(0.05)

    def _unusable(self, exc: Exception) -> StateError:
        return StateError(
            f"{self.path}: {exc}: not a usable juncture database. Nothing was changed; move it aside "
            "to start afresh (the KV store, secrets and history in it are then gone)"
        )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def vault(self, create: bool = False) -> Vault | None:
        if self._vault is None:
            self._vault = load_vault(self.state_dir, create)
        return self._vault

    def _opened(self) -> Vault:
        vault = self.vault()
        if vault is None:
            raise StateError(
                f"the store holds secrets but there is no key: {os.path.join(self.state_dir, 'secret.key')} "
                "is missing and JUNCTURE_SECRET_KEY is not set"
            )
        return vault

    # -- KV ---------------------------------------------------------------------------------------

    def put(self, entries: list[Entry], default_ns: str, run_id: str | None = None) -> None:
        """Store `entries` in one transaction: all of them, or none."""
        now = time.time()
        vault = self.vault(create=True) if any(e.secret for e in entries) else None
        rows = []
        for entry in entries:
            ns = entry.ns or default_ns
            value = (
                vault.seal(ns, entry.key, entry.value) if vault is not None and entry.secret else entry.value
            )
            rows.append(
                (
                    ns,
                    entry.key,
                    value if isinstance(value, bytes) else value.encode(),
                    int(entry.secret),
                    now,
                    run_id,
                )
            )
        with self._write() as db:
            db.executemany(
                "INSERT INTO kv (ns, key, value, secret, updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value, secret = excluded.secret, "
                "updated_at = excluded.updated_at, run_id = excluded.run_id",
                rows,
            )

    def get(self, ns: str, key: str) -> KvItem | None:
        rows = self._read("SELECT value, secret, updated_at FROM kv WHERE ns = ? AND key = ?", (ns, key))
        if not rows:
            return None
        value, secret, updated = rows[0]
        text = self._opened().open(ns, key, value) if secret else bytes(value).decode()
        return KvItem(ns, key, text, bool(secret), updated)

    def find(self, key: str, namespaces: tuple[str, ...], secret: bool) -> KvItem | None:
        """`key` from the first of `namespaces` that holds it as a variable (or as a secret)."""
        for ns in namespaces:
            item = self.get(ns, key)
            if item is not None and item.secret == secret:
                return item
        return None

    def items(self, ns: str | None = None, open_secrets: bool = False) -> list[KvItem]:
        sql = "SELECT ns, key, value, secret, updated_at FROM kv"
        rows = self._read(sql + (" WHERE ns = ?" if ns else "") + " ORDER BY ns, key", (ns,) if ns else ())
        found = []
        for row_ns, key, value, secret, updated in rows:
            if secret:
                text = self._opened().open(row_ns, key, value) if open_secrets else None
            else:
                text = bytes(value).decode()
            found.append(KvItem(row_ns, key, text, bool(secret), updated))
        return found

    def remove(self, ns: str, key: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key)).rowcount > 0

    def secret_values(self) -> list[str]:
        """Every secret's value, for masking; none when there are no secrets (no key is needed then)."""
        if not self._read("SELECT 1 FROM kv WHERE secret = 1 LIMIT 1"):
            return []
        return [item.value for item in self.items(open_secrets=True) if item.secret and item.value]

    # -- history ----------------------------------------------------------------------------------

    def run_started(self, run: dict[str, Any]) -> None:
        pid = os.getpid()
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, verb, stage, event, version, who, started_at, status, pid, pid_start) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    run["id"],
                    run["verb"],
                    run.get("stage"),
                    run.get("event"),
                    run.get("version"),
                    run.get("who"),
                    run["started_at"],
                    pid,
                    _process_start(pid),
                ),
            )

    def run_ended(self, run_id: str, status: str, exit_code: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, status = ?, exit_code = ? WHERE id = ?",
                (time.time(), status, exit_code, run_id),
            )

    def add_items(self, run_id: str, items: list[dict[str, Any]]) -> None:
        """Append a batch of hook runs or steps to a run's timeline (one transaction per batch)."""
        if not items:
            return
        columns = ", ".join(_ITEM_COLUMNS)
        marks = ", ".join("?" * (len(_ITEM_COLUMNS) + 2))
        with self._write() as db:
            (seq,) = db.execute("SELECT COUNT(*) FROM items WHERE run_id = ?", (run_id,)).fetchone()
            db.executemany(
                f"INSERT INTO items (run_id, seq, {columns}) VALUES ({marks})",
                [(run_id, seq + i, *(item.get(c) for c in _ITEM_COLUMNS)) for i, item in enumerate(items)],
            )

    def runs(self, stage: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_RUN_COLUMNS)}, pid, pid_start FROM runs"
        rows = self._read(
            sql + (" WHERE stage = ?" if stage else "") + " ORDER BY started_at DESC LIMIT ?",
            (stage, limit) if stage else (limit,),
        )
        return [self._run(row) for row in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read(
            f"SELECT {', '.join(_RUN_COLUMNS)}, pid, pid_start FROM runs WHERE id = ?", (run_id,)
        )
        return self._run(rows[0]) if rows else None

    def run_items(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [dict(zip(_ITEM_COLUMNS, row, strict=True)) for row in rows]

    @staticmethod
    def _run(row: tuple[Any, ...]) -> dict[str, Any]:
        run = dict(zip(_RUN_COLUMNS, row[: len(_RUN_COLUMNS)], strict=True))
        pid, pid_start = row[len(_RUN_COLUMNS) :]
        if run["status"] == "running" and _process_start(pid) != pid_start:
            run["status"] = "interrupted"  # its process is gone (killed, or the machine restarted)
        return run

    # -- check ------------------------------------------------------------------------------------

    def revisions(self) -> dict[str, int]:
        return dict(self._read("SELECT event, revision FROM event_revisions"))

    def remember_revisions(self, revisions: dict[str, int]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._write() as db:
            db.executemany(
                "INSERT INTO event_revisions (event, revision, seen_at) VALUES (?, ?, ?) "
                "ON CONFLICT(event) DO UPDATE SET revision = excluded.revision, seen_at = excluded.seen_at",
                [(event, revision, now) for event, revision in revisions.items()],
            )


def _process_start(pid: int | None) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, names it across pid reuse."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
