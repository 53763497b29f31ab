"""The deploy lock: a file in `deploy_to` saying who deploys what, since when, in which run.

It is created whole or not at all (written to a private file, then hard-linked into place, which fails
if a lock exists), so a second deploy never sees a half-written lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from .errors import JunctureError
from .record import asdict, fields, record

__all__ = ["LOCK_NAME", "LockHeld", "LockInfo", "acquire", "new_info", "read", "release"]

LOCK_NAME = "deploy.lock"


@record
class LockInfo:
    run_id: str
    verb: str
    stage: str
    version: str
    performer: str
    host: str
    pid: int
    since: str

    def describe(self) -> str:
        return (
            f"held by {self.performer} (pid {self.pid} on {self.host}) since {self.since}: "
            f"{self.verb} of version {self.version or '(none)'}, run {self.run_id}"
        )


class LockHeld(JunctureError):
    exit_code = 1


def new_info(run_id: str, verb: str, stage: str, version: str, performer: str) -> LockInfo:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return LockInfo(run_id, verb, stage, version, performer, os.uname().nodename, os.getpid(), since)


def read(directory: str) -> LockInfo | None:
    """The lock's holder, None when unlocked. An unreadable lock still counts as held."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        with open(path) as handle:
            data = json.load(handle)
        return LockInfo(**{key: data[key] for key in fields(LockInfo)})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return LockInfo("?", "?", "?", "", "unknown (unreadable lock file)", "?", 0, "?")


def acquire(
    directory: str, info: LockInfo, wait: float = 0.0, waiting: Callable[[LockInfo], None] | None = None
) -> None:
    """Take the lock or raise LockHeld; with `wait`, retry for up to that many seconds (telling
    `waiting` once who holds it)."""
    path = os.path.join(directory, LOCK_NAME)
    staged = f"{path}.{info.pid}.tmp"
    with open(staged, "w") as handle:
        json.dump(asdict(info), handle, indent=1)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                os.link(staged, path)
                return
            except FileExistsError:
                holder = read(directory)
                if holder is None:
                    continue  # released between our link and our read
                if time.monotonic() >= deadline:
                    hint = f"waited {wait:g} s; " if wait else ""
                    raise LockHeld(
                        f"stage {info.stage} is locked, {holder.describe()} ({hint}wait with --lock-wait "
                        f"SECONDS, or remove a stale lock with `juncture lock release {info.stage}`)"
                    ) from None
                if waiting is not None:
                    waiting(holder)
                    waiting = None
                time.sleep(0.2)
    finally:
        os.unlink(staged)


def release(directory: str, run_id: str | None = None) -> bool:
    """Remove the lock; with `run_id`, only if that run holds it. Whether a lock was removed."""
    path = os.path.join(directory, LOCK_NAME)
    if run_id is not None:
        holder = read(directory)
        if holder is None or holder.run_id != run_id:
            return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
