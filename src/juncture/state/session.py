"""What one run keeps for its hooks: each hook's outputs file and the values committed from it, the
secrets to mask in everything shown or written, and the run's history in the store.

The engine asks it for a hook's extra environment when the hook starts, and hands it the hook's
outcome when it ends: a hook that succeeded has its outputs committed in one transaction; a hook that
failed or timed out has nothing committed; during a health check nothing is committed and the hook's
output says why. Values committed by a hook reach every later hook of the run as `<PREFIX>VAR_<KEY>`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ..model.event import EventSpec
from ..model.outcome import HookResult
from ..model.recorded import escape
from ..model.target import Target
from ..plan.plan import Plan
from ..project import Project
from ..transports.shell import OUTPUTS
from .logs import logged_bytes, prune_logs
from .masking import Masks
from .outputs import OutputsError, parse_outputs, written_secrets
from .sqlite import StateError, Store

__all__ = ["READ_ONLY_EVENTS", "Session", "env_name", "open_session"]

READ_ONLY_EVENTS = frozenset({"health_check"})  # checks look, they do not change state (maand's rule)
_PYLIB = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pylib"
)  # juncture_hook.py alone


def env_name(key: str) -> str:
    """A KV key as an environment variable's suffix: `db.url` -> `DB_URL`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", key).upper()


class Session:
    def __init__(self, store: Store, prefix: str, run: dict[str, Any]) -> None:
        self.store = store
        self.prefix = prefix
        self.run_id: str = run["id"]
        self.stage: str | None = run.get("stage")
        self.values: dict[str, dict[str, str]] = {}  # namespace -> key -> value committed this run
        self.masks = Masks()
        self._directory: str | None = None
        self._items: list[dict[str, Any]] = []
        self._seen: dict[str, int] = {}  # outputs file -> size when last read
        self._files = 0
        self._empty: list[str] = []  # outputs files that hooks left empty
        inherited = os.environ.get("PYTHONPATH")
        self._pythonpath = _PYLIB + (os.pathsep + inherited if inherited else "")  # for juncture_hook
        self._secrets: dict[tuple[tuple[str, ...], str], str | None] = {}
        self._ended = False
        store.run_started(run)
        self.add_masks(store.secret_values())

    # -- masking ----------------------------------------------------------------------------------

    def add_masks(self, values: list[str]) -> None:
        """Hide these secrets (and each line of one of several lines) from here on; a hook's output still
        held back by its `Stream` is masked with them too."""
        self.masks.add(values)

    def mask_text(self, text: str) -> str:
        if not self.masks:
            return text
        return self.masks.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")

    # -- a hook's environment and outputs ---------------------------------------------------------

    def namespace(self) -> str:
        return f"stage:{self.stage}" if self.stage else "app"

    def hook_env(self, target: Target, event: EventSpec) -> tuple[dict[str, str], str | None]:
        """The environment a hook gets from the run, and its outputs file (None on other machines: the
        file would have to be read back from there)."""
        env: dict[str, str] = {}
        namespaces = list(dict.fromkeys(["app", self.namespace()]))
        if target.host is not None:
            namespaces.append(f"host:{target.host.name}")
        for ns in namespaces:
            for key, value in self.values.get(ns, {}).items():
                env[f"{self.prefix}VAR_{env_name(key)}"] = value
        for key in event.secrets:  # only where the config asks for them
            env[f"{self.prefix}SECRET_{env_name(key)}"] = self.secret(key, tuple(namespaces[::-1]))
        if target.kind != "local":
            if target.container is not None and target.container.host is None:
                return env, None  # a container here runs a session per hook: no file comes back
            env[f"{self.prefix}OUTPUT"] = OUTPUTS  # the file is made there
            if event.name in READ_ONLY_EVENTS:
                env[f"{self.prefix}OUTPUT_READONLY"] = "1"
            return env, OUTPUTS
        if self._directory is None:
            import tempfile

            base = _outputs_base()
            self._sweep(base)
            self._directory = tempfile.mkdtemp(prefix=f"juncture-{self.run_id}-", dir=base)  # 0700
        if self._empty:  # a file an earlier hook left empty: no need to make another
            path = self._empty.pop()
        else:
            self._files += 1
            path = f"{self._directory}/output-{self._files}"  # private dir, fresh names
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        env[f"{self.prefix}OUTPUT"] = path
        env["PYTHONPATH"] = self._pythonpath
        if event.name in READ_ONLY_EVENTS:
            env[f"{self.prefix}OUTPUT_READONLY"] = "1"
        return env, path

    def _sweep(self, base: str) -> None:
        """Remove what killed runs of this project left (SIGKILL leaves no time to clean up)."""
        import glob
        import shutil

        for path in glob.glob(os.path.join(base, "juncture-*")):
            run_id = os.path.basename(path)[len("juncture-") :].rsplit("-", 1)[0]
            found = self.store.run(run_id) if run_id != self.run_id else None
            if found is not None and found["status"] != "running":
                shutil.rmtree(path, ignore_errors=True)

    def watch(self, path: str) -> None:
        """Learn the secrets a running hook has written so far, before its output shows them."""
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        if size == self._seen.get(path, 0):
            return
        self._seen[path] = size
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            self.add_masks(written_secrets(handle.read()))

    def secret(self, key: str, namespaces: tuple[str, ...]) -> str:
        """A secret from the most specific namespace that has it (host, stage, app), once per run."""
        if (namespaces, key) not in self._secrets:
            item = self.store.find(key, namespaces, secret=True)
            self._secrets[(namespaces, key)] = item.value if item is not None else None
        value = self._secrets[(namespaces, key)]
        if value is None:
            raise StateError(f"secret {key!r} is not in the store ({' or '.join(namespaces)})")
        return value

    def collect(self, result: HookResult, event: str, path: str) -> str:
        """Commit a finished hook's outputs file when it succeeded; a message for its output, or ""."""
        try:
            if not os.stat(path).st_size:  # most hooks write nothing: the next hook gets the file
                self._empty.append(path)
                return ""
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                text = handle.read()
            os.unlink(path)
        except OSError:
            return ""
        self._seen.pop(path, None)
        return self.collect_text(result, event, text)

    def collect_text(self, result: HookResult, event: str, text: str) -> str:
        if not text.strip():
            return ""
        try:
            entries = parse_outputs(text)
        except OutputsError as exc:
            self.add_masks(written_secrets(text))  # not stored, but still hidden (history, this message)
            problem = self.mask_text(str(exc))
            if result.status == "ok":
                result.status = "failed"
                result.error = f"outputs file {problem}: nothing stored"
            return f"juncture: outputs file {problem}; nothing was stored\n"
        self.add_masks([e.value for e in entries if e.secret])
        keys = ", ".join(e.key for e in entries)
        if event in READ_ONLY_EVENTS:
            return f"juncture: {event} is read-only: not stored: {keys}\n"
        if result.status != "ok":
            return f"juncture: the hook did not succeed: not stored: {keys}\n"
        self.store.put(entries, self.namespace(), self.run_id)
        for entry in entries:
            if not entry.secret:
                self.values.setdefault(entry.ns or self.namespace(), {})[entry.key] = entry.value
        return ""

    # -- history ----------------------------------------------------------------------------------

    def hook_done(self, plan: Plan, result: HookResult) -> None:
        ended = time.time()
        phase = plan.env.get(f"{self.prefix}PHASE") or None
        self._items.append(
            {
                "target": result.target,
                "kind": "hook",
                "phase": phase,
                "event": plan.event.name,
                "name": result.hook.label,
                "started_at": ended - result.duration,
                "ended_at": ended,
                "status": result.status,
                "exit_code": result.exit_code,
                "output_tail": _last_lines(result.tail),  # masked by the engine
            }
        )

    def step_done(self, phase: str, name: str, seconds: float, status: str, target: str = "local") -> None:
        ended = time.time()
        self._items.append(
            {
                "target": target,
                "kind": "step",
                "phase": phase,
                "event": None,
                "name": self.mask_text(name),
                "started_at": ended - seconds,
                "ended_at": ended,
                "status": status,
                "exit_code": None,
                "output_tail": "",
            }
        )

    def flush(self) -> None:
        """Write the history gathered so far (after each event: a killed run keeps what it did)."""
        items, self._items = self._items, []
        self.store.add_items(self.run_id, items)

    def end(self, exit_code: int) -> None:
        """Record the run's end: ok (0), interrupted (130) or failed."""
        if self._ended:
            return
        self._ended = True
        self.flush()
        status = "ok" if exit_code == 0 else "interrupted" if exit_code == 130 else "failed"
        self.store.run_ended(self.run_id, status, exit_code, logged_bytes(self.store.state_dir, self.run_id))
        self.store.close()  # a last WAL checkpoint; the command may end without interpreter teardown
        if self._directory is not None:
            import shutil

            shutil.rmtree(self._directory, ignore_errors=True)


def _last_lines(tail: bytes, lines: int = 20) -> str:
    return b"\n".join(tail.rstrip(b"\n").split(b"\n")[-lines:]).decode("utf-8", "replace")


def open_session(
    project: Project,
    run_id: str,
    verb: str,
    *,
    stage: str | None = None,
    event: str | None = None,
    version: str | None = None,
    who: str = "",
) -> Session:
    """The session of a run about to start, recorded in the project's store as running."""
    # The callers check these values (recorded.py); escaping keeps a missed one from forging history lines.
    run = {
        "id": run_id,
        "verb": escape(verb),
        "stage": stage and escape(stage),
        "event": event and escape(event),
        "version": version and escape(version),
        "who": escape(who),
        "started_at": time.time(),
    }
    store = Store(project.state_dir)
    prune_logs(store, project.config.keep_logs, project.config.max_log_bytes, run_id)  # before it logs
    return Session(store, project.config.env_prefix, run)


def _outputs_base() -> str:
    """tmpfs when there is one: a file costs ~7 us there (50-150 us on a disk), and secrets written to
    outputs files never reach a disk."""
    import tempfile

    return "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else tempfile.gettempdir()
