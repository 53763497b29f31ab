"""The project's state: one SQLite database under `.juncture/state/` (WAL), shared by every juncture
process of the project: the KV store (secrets sealed by the vault), run history, and the event
revisions `check` remembers.

Every write is one `BEGIN IMMEDIATE` transaction, so two processes at once wait for each other (up to
30 s) instead of failing, and a process killed mid-write leaves the last committed state.

A store that cannot be used is reported as what it is: a full disk, a read-only file system or a
permission problem (the store intact), a file that is not a juncture database, or a damaged one.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .._util.record import record
from .outputs import Entry
from .vault import StateError, Vault, load_vault

__all__ = ["KvItem", "StateError", "Store"]

# SQLite's primary result codes that say what is wrong (the Python module does not name them).
_BUSY, _LOCKED, _CORRUPT, _FULL, _NOTADB = 5, 6, 11, 13, 26
_FOREIGN = ("no such table", "no such column", "has no column named")  # a database, but not ours
_LOW_SPACE = 256 * 1024  # below this, an I/O error is the disk being full (SQLite needs 32 KiB for -shm)

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
CREATE TABLE IF NOT EXISTS run_logs (
    run_id TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
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
# Each table as SQLite keeps it in sqlite_master (without IF NOT EXISTS): a database holding one of
# these names with another definition, or only tables of other names, is not a juncture store.
_TABLES = {
    statement.split()[2]: statement
    for statement in _SCHEMA.replace(" IF NOT EXISTS", "").strip().rstrip(";").split(";\n")
}
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
            fresh = not os.path.exists(self.path)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._prepare()
            if fresh:
                os.chmod(self.path, 0o600)
        except (sqlite3.Error, OSError) as exc:
            raise self._failure(exc) from None

    def _prepare(self, tries: int = 50) -> None:
        # While another run's last connection closes, it checkpoints and removes the WAL under an
        # exclusive lock, and switching to WAL here can then fail at once as "locked", without waiting
        # for the busy timeout: a moment to wait, not a broken database.
        for attempt in range(tries):
            try:
                self._check_ours()  # before anything is written to it
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed state
                self.db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == tries - 1:
                    raise
                time.sleep(0.05)

    def _check_ours(self) -> None:
        """Refuse an SQLite database that is not a juncture store (tables, but not with our columns)."""
        found = dict(self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        if not found:
            return  # a new store
        for table, sql in found.items():
            if table in _TABLES and sql != _TABLES[table]:
                raise self._foreign(f"its table {table} is not juncture's")
        if not found.keys() & _TABLES.keys():
            raise self._foreign(f"its tables are {', '.join(sorted(found))}")

    def _foreign(self, detail: str) -> StateError:
        return StateError(
            f"{self.path}: not a juncture database ({detail}). Nothing was changed; if it is not "
            "needed, move it aside and juncture starts a new store"
        )

    def _failure(self, exc: sqlite3.Error | OSError) -> StateError:
        """The one-line reason the store cannot be used: what is wrong, never "corrupt" unless it is."""
        if isinstance(exc, OSError):
            import errno

            causes = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only"}
            cause = causes.get(exc.errno or 0) or ("permission" if isinstance(exc, PermissionError) else "")
            where = exc.filename or self.path
            return StateError(_explain(cause, where) if cause else f"{where}: {exc.strerror or exc}")
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
        if code == _NOTADB or any(words in str(exc) for words in _FOREIGN):
            return self._foreign(str(exc))
        if code == _CORRUPT:
            return StateError(
                f"{self.path}: damaged ({exc}). Nothing was changed; keep a copy and try "
                f"`sqlite3 {self.path} .recover` to save what it holds"
            )
        if code in (_BUSY, _LOCKED):
            return StateError(f"{self.path}: busy: another juncture process held it for 30 s; try again")
        directory = os.path.dirname(self.path)
        cause, where = ("full", directory) if code == _FULL else self._cause()
        if cause:
            return StateError(_explain(cause, where))
        return StateError(f"{self.path}: {exc} ({getattr(exc, 'sqlite_errorname', 'SQLite error')})")

    def _cause(self) -> tuple[str, str]:
        """What of the file system stops SQLite, and where (asked after an error only): SQLite says
        "disk I/O error" or "unable to open" for a full disk, a read-only mount or a directory it
        cannot write. ("", "") when none of these."""
        directory = os.path.dirname(self.path)
        try:
            fs = os.statvfs(directory)
        except OSError:
            return "", ""
        if fs.f_flag & os.ST_RDONLY:
            return "read-only", directory
        if fs.f_bavail * fs.f_frsize < _LOW_SPACE:
            return "full", directory
        if not os.access(directory, os.W_OK | os.X_OK):
            return "permission", directory
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK | os.W_OK):
            return "permission", self.path
        return "", ""

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
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # a failed COMMIT (disk full) may leave it open
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the first error says what is wrong
                raise
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from None

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc) from None

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

    def run_ended(self, run_id: str, status: str, exit_code: int, log_bytes: int | None = None) -> None:
        """Record a run's end, and the size of its logs (None: it wrote none) for their retention."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, status = ?, exit_code = ? WHERE id = ?",
                (time.time(), status, exit_code, run_id),
            )
            if log_bytes is not None:
                db.execute(
                    "INSERT OR REPLACE INTO run_logs (run_id, bytes) VALUES (?, ?)", (run_id, log_bytes)
                )

    # -- logs -------------------------------------------------------------------------------------

    def log_sizes(self) -> dict[str, int]:
        """The size of each run's logs, as recorded when it ended (or when retention measured it)."""
        return dict(self._read("SELECT run_id, bytes FROM run_logs"))

    def live_runs(self, run_ids: list[str]) -> set[str]:
        """Those of `run_ids` still running: recorded so, and their process is still there."""
        wanted = set(run_ids)
        rows = self._read("SELECT id, pid, pid_start FROM runs WHERE status = 'running'")
        return {run_id for run_id, pid, start in rows if run_id in wanted and _process_start(pid) == start}

    def logs_changed(self, measured: dict[str, int], removed: list[str]) -> None:
        if not measured and not removed:
            return
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO run_logs (run_id, bytes) VALUES (?, ?)", measured.items())
            db.executemany("DELETE FROM run_logs WHERE run_id = ?", [(run_id,) for run_id in removed])

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


def _explain(cause: str, where: str) -> str:
    if cause == "full":
        what = "no space left on the file system"
    elif cause == "read-only":
        what = "read-only file system"
    else:
        import pwd

        what = f"permission denied: user {pwd.getpwuid(os.geteuid()).pw_name} cannot write it"
    return f"{where}: {what}; nothing in the store was changed or lost"


def _process_start(pid: int | None) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, names it across pid reuse."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
