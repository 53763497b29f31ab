"""The deploy lock: a file in `deploy_to` saying who deploys what, since when, in which run.

It is created whole or not at all (written to a private file, then hard-linked into place, which fails
if a lock exists), so a second deploy never sees a half-written lock.

A lock whose holder died is *stale*. The lock records the holder's machine (`host`), its `pid`, the
process's start time (`start`: field 22 of /proc/PID/stat, so that a reused pid shows), the machine's
boot id (`boot`, so that a reboot shows) and the holder's pid namespace (`pidns`: a container that
shares the machine's name has pids of its own). Only a holder on the machine that looks, in its pid
namespace, can be checked; any other may belong to a live deploy and counts as held. A stale lock
is taken over under flock(2) of `deploy_to` (which the kernel drops when its process dies), after
checking that it is still the same lock: of several takers, one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable

from .._util.record import asdict, fields, record
from ..errors import JunctureError

__all__ = [
    "LOCK_NAME",
    "LockError",
    "LockHeld",
    "LockInfo",
    "Verdict",
    "acquire",
    "check",
    "held_message",
    "judge",
    "new_info",
    "parse",
    "read",
    "release",
    "unwritable",
]

LOCK_NAME = "deploy.lock"
_UNREADABLE = "unknown (unreadable lock file)"


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
    start: int = 0  # clock ticks after boot; 0: not recorded (a lock written by an older juncture)
    boot: str = ""
    pidns: str = ""  # `pid:[INODE]`, as /proc/self/ns/pid reads

    def describe(self) -> str:
        return (
            f"held by {self.performer} (pid {self.pid} on {self.host}) since {self.since}: "
            f"{self.verb} of version {self.version or '(none)'}, run {self.run_id}"
        )


@record
class Verdict:
    """Whether a lock's holder lives: alive, stale (`reason`: "holder pid N is gone…") or unknown
    (`reason`: why it cannot be checked)."""

    state: str
    reason: str = ""


class LockError(JunctureError):
    """The lock cannot be taken or released (not because it is held: `LockHeld`)."""

    exit_code = 1


class LockHeld(LockError):
    pass


def unwritable(directory: str, exc: OSError) -> str:
    return f"{directory} is not writable ({exc.strerror or exc})"


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat); None when there is no such
    process, or only its zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    after = stat.rsplit(b")", 1)[-1].split()  # the name, in parentheses, may hold spaces
    return None if after[0] == b"Z" else int(after[19])


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def new_info(run_id: str, verb: str, stage: str, version: str, performer: str) -> LockInfo:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pid = os.getpid()
    start = process_start(pid) or 0
    host = os.uname().nodename
    return LockInfo(
        run_id, verb, stage, version, performer, host, pid, since, start, boot_id(), pid_namespace()
    )


def parse(text: str) -> LockInfo:
    """A lock file's holder; an unreadable one still counts as held (by an unknown holder)."""
    try:
        data = json.loads(text)
        info = LockInfo(**{key: data[key] for key in fields(LockInfo) if key in data})
        if isinstance(info.pid, int) and isinstance(info.start, int) and isinstance(info.host, str):
            return info
    except (ValueError, TypeError):
        pass
    return LockInfo("?", "?", "?", "", _UNREADABLE, "?", 0, "?")


def read(directory: str) -> LockInfo | None:
    """The lock's holder, None when unlocked. An unreadable lock still counts as held."""
    try:
        with open(os.path.join(directory, LOCK_NAME)) as handle:
            return parse(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return parse("")


def judge(holder: LockInfo, boot: str, pidns: str, start: int | None) -> Verdict:
    """The verdict on a holder from its machine's boot id, the pid namespace that looks, and the start
    time of `holder.pid` there (None: no such process)."""
    gone = f"holder pid {holder.pid} is gone"
    if holder.boot and boot and holder.boot != boot:
        return Verdict("stale", f"{gone}: {holder.host} was restarted since")
    if holder.pidns and pidns and holder.pidns != pidns:
        return Verdict(
            "unknown", f"held from another pid namespace on {holder.host}: cannot check whether it is alive"
        )
    if start is None:
        return Verdict("stale", gone)
    if holder.start and start != holder.start:
        return Verdict("stale", f"{gone}: pid {holder.pid} is another process now")
    return Verdict("alive")


def check(holder: LockInfo) -> Verdict:
    """Whether the holder lives, when it ran on this machine; else unknown."""
    if holder.performer == _UNREADABLE or holder.pid <= 0:
        return Verdict("unknown", "the lock file is unreadable: cannot check whether its holder is alive")
    if holder.host != os.uname().nodename:
        return Verdict(
            "unknown", f"held from host {holder.host}: cannot check whether it is alive; leases come later"
        )
    if not os.path.isdir("/proc/self"):
        return Verdict("unknown", "no /proc on this machine: cannot check whether the holder is alive")
    return judge(holder, boot_id(), pid_namespace(), process_start(holder.pid))


def held_message(stage: str, where: str, holder: LockInfo, verdict: Verdict, wait: float) -> str:
    """Why a deploy could not take the lock: who holds it and what to do."""
    waited = f"waited {wait:g} s; " if wait else ""
    if verdict.state == "unknown":
        advice = f"{verdict.reason}; {waited}wait with --lock-wait SECONDS, or if that deploy is dead, "
        advice += f"free the lock with `juncture lock release --force {stage}`"
    else:
        advice = f"{waited}wait with --lock-wait SECONDS"
    return f"stage {stage} is locked{where} {holder.describe()} ({advice})"


def acquire(
    directory: str,
    info: LockInfo,
    wait: float = 0.0,
    waiting: Callable[[LockInfo], None] | None = None,
    took_over: Callable[[LockInfo, Verdict], None] | None = None,
) -> None:
    """Take the lock, or a stale one over (telling `took_over` whose), or raise LockHeld; with `wait`,
    retry for up to that many seconds (telling `waiting` once who holds it)."""
    path = os.path.join(directory, LOCK_NAME)
    staged = f"{path}.{info.pid}.tmp"
    try:
        with open(staged, "w") as handle:
            json.dump(asdict(info), handle, indent=1)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(staged)  # written in part (a full disk)
        raise LockError(f"cannot take the deploy lock: {unwritable(directory, exc)}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                os.link(staged, path)
                return
            except FileExistsError:
                pass
            except OSError as exc:
                raise LockError(f"cannot take the deploy lock in {directory}: {exc.strerror}") from None
            holder = read(directory)
            if holder is None:
                continue  # released between our link and our read
            verdict = check(holder)
            if verdict.state == "stale":
                if _take_over(directory, staged, holder):
                    if took_over is not None:
                        took_over(holder, verdict)
                    return
                continue  # another taker, or the lock's release, came first: look again
            if time.monotonic() >= deadline:
                raise LockHeld(held_message(info.stage, ",", holder, verdict, wait))
            if waiting is not None:
                waiting(holder)
                waiting = None
            time.sleep(0.2)
    finally:
        os.unlink(staged)


def _exclusive(directory: str) -> int:
    """An open descriptor of `directory` holding flock(2) on it: the critical section of takers and
    releasers of a stale lock. Closing it (or the process dying) ends it."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        raise LockError(f"cannot lock {directory} to replace its deploy lock: {exc.strerror}") from None
    return fd


def _take_over(directory: str, staged: str, stale: LockInfo) -> bool:
    """Replace the lock `stale` by `staged`, unless it changed since it was judged."""
    path = os.path.join(directory, LOCK_NAME)
    fd = _exclusive(directory)
    try:
        if read(directory) != stale:
            return False
        os.unlink(path)
        try:
            os.link(staged, path)
        except FileExistsError:  # a plain `acquire` found it free first: it holds the lock
            return False
        return True
    finally:
        os.close(fd)


def release(directory: str, run_id: str | None = None, holder: LockInfo | None = None) -> bool:
    """Remove the lock: with `run_id`, only if that run holds it; with `holder`, only if it is still
    that holder's lock (checked under the same flock as a takeover). Whether a lock was removed."""
    path = os.path.join(directory, LOCK_NAME)
    fd = -1
    try:
        if holder is not None:
            fd = _exclusive(directory)
        found = read(directory)
        if found is None or (run_id is not None and found.run_id != run_id):
            return False
        if holder is not None and found != holder:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LockError(f"cannot release the deploy lock: {unwritable(directory, exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    return True
