"""What a local hook started, found and killed even after it left the hook's process group.

Every hook gets `JUNCTURE_HOOK_TOKEN=<run prefix>-<n>` (the name does not follow env_prefix). A child
that calls `setsid` leaves the hook's group but keeps that environment, so a timeout or an interrupt
signals the group and every process whose /proc/PID/environ holds the hook's token (Jenkins kills a
build's processes the same way). The /proc scan runs only on that path, never for a hook that exits by
itself: a daemon it leaves behind on purpose lives on, unless the event says `leftovers: kill`.

A watchdog outlives a juncture killed by SIGKILL. Started once per juncture process, before its first
local hook, it is a `sh` blocked reading a pipe that juncture never writes to, so it costs nothing while
juncture lives. The hooks that run are listed in a memfd both share, one fixed slot per hook written
with `pwrite` (no process is woken per hook). When the pipe reaches EOF (juncture exited or died) and a
slot is still taken, the watchdog starts Python on this module (`_reap`), which gives those hooks the
interrupt path: TERM to their groups and to their tokens' processes, the event's grace, then KILL.

Escapes that remain: a process that drops the variable from its environment (`env -u`, `env -i`) and
calls `setsid`, or one that runs as another user juncture may not signal.
"""

from __future__ import annotations

import itertools
import mmap
import os
import signal
import sys
import time
from collections.abc import Collection

__all__ = ["TOKEN", "arm", "carriers", "new_token", "signal_hook", "unwatch", "watch"]

TOKEN = "JUNCTURE_HOOK_TOKEN"
PREFIX = os.urandom(8).hex()  # this juncture process's hooks, and only them
_KEY = b"\0" + TOKEN.encode() + b"="
_ROUNDS = 8  # at most, for SIGKILL
_SLOT = 64  # bytes per running hook in the shared list: "TOKEN PGID GRACE", blank-padded, newline
_BLANK = b" " * (_SLOT - 1) + b"\n"
_STATE_FD = 3  # the list, in the watchdog
_MAPPED = 64  # slots of the list mapped into memory (one page): listing a hook then makes no syscall
# The watchdog: wait for EOF on stdin; if a slot of fd 3 is taken, hand over to Python. `read` strips
# the padding, so a free slot reads as an empty line.
_WATCHDOG = """trap '' INT HUP TERM
read -r _
while read -r slot; do
  [ -n "$slot" ] && exec "$1" -I -S -c "import sys; sys.path[:0] = sys.argv[1:2]; import reaper; reaper._reap()" "$2" "$3"
done <&3
"""
_numbers = itertools.count(1)
_state: int | None = None  # the memfd of running hooks; -1: no watchdog
_map: mmap.mmap | None = None  # its first _MAPPED slots
_free: list[int] = []  # slots free for reuse
_used = 0  # slots ever taken


def new_token() -> str:
    return f"{PREFIX}-{next(_numbers)}"


def carriers(tokens: Collection[bytes]) -> list[int]:
    """The processes whose environment holds TOKEN set to one of `tokens`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/environ", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone, or another user's
            continue
        try:
            chunks = [b"\0"]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            continue
        finally:
            os.close(fd)
        data = b"".join(chunks)
        at = data.find(_KEY)
        if at >= 0:
            start = at + len(_KEY)
            end = data.find(b"\0", start)
            if data[start : end if end >= 0 else len(data)] in tokens:
                found.append(int(entry))
    return found


def _signal_all(groups: Collection[int], tokens: Collection[bytes], signum: int) -> bool:
    """Signal the process groups, and the tokens' processes outside them (a hook trapping TERM must not
    get it twice); whether any of them still existed."""
    hit = False
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
            hit = True
        except ProcessLookupError:
            pass
    for pid in carriers(tokens) if tokens else ():
        try:
            if os.getpgid(pid) not in groups:
                os.kill(pid, signum)
            hit = True
        except ProcessLookupError:
            pass
    return hit


def signal_hook(pgid: int, token: str | None, signum: int) -> None:
    """Signal a hook's group and every process carrying its token; with SIGKILL, scan again until none
    is left (a process may fork between a scan and its signal)."""
    tokens = {token.encode()} if token is not None else set()
    for _ in range(_ROUNDS if signum == signal.SIGKILL and tokens else 1):
        if not _signal_all((pgid,), tokens, signum):
            return


# -- the watchdog, juncture's side ----------------------------------------------------------------------


def arm() -> None:
    """Start the watchdog, before the first hook starts: a hook must not run unwatched."""
    global _state
    if _state is None:
        _state = _start()


def watch(token: str, pgid: int, grace: float) -> int:
    """List hook `token` (group `pgid`) as running; its slot, for `unwatch`."""
    global _used
    if _state is None or _state < 0:
        return -1
    if _free:
        slot = _free.pop()
    else:
        slot, _used = _used, _used + 1
    entry = f"{token} {pgid} {grace:g}".encode()[: _SLOT - 1].ljust(_SLOT - 1) + b"\n"
    try:
        _put(slot, entry)
    except OSError:  # no memory for the page: the hook still dies at its timeout
        return -1
    return slot


def unwatch(slot: int) -> None:
    """The hook was reaped: what it leaves is no longer the watchdog's business."""
    if slot >= 0 and _state is not None and _state >= 0:
        _put(slot, _BLANK)
        _free.append(slot)


def _put(slot: int, entry: bytes) -> None:
    if _map is not None and slot < _MAPPED:
        _map[slot * _SLOT : (slot + 1) * _SLOT] = entry
    else:
        assert _state is not None
        os.pwrite(_state, entry, slot * _SLOT)  # a slot past the page: more hooks at once than that


def _start() -> int:
    """Start the watchdog in a session of its own (the terminal's Ctrl-C and hang-up do not reach it);
    its output goes nowhere, so it holds no pipe of juncture's open."""
    global _map
    if not sys.executable:
        return -1
    state = os.memfd_create("juncture-hooks", os.MFD_CLOEXEC)
    # pwrite, not write: the watchdog's fd 3 shares the file offset, and reads from the start
    os.pwrite(state, _BLANK * _MAPPED, 0)
    _map = mmap.mmap(state, _MAPPED * _SLOT)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)  # hooks must not hold the write end
    devnull = (os.O_WRONLY, 0)
    try:
        os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", _WATCHDOG, "sh", sys.executable, os.path.dirname(__file__), PREFIX],
            {},  # without the token of a juncture that runs as a hook itself
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_end, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, *devnull),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, *devnull),
                (os.POSIX_SPAWN_DUP2, state, _STATE_FD),
            ],
            setsid=True,
        )
    except OSError:
        os.close(write_end)
        os.close(state)
        return -1
    finally:
        os.close(read_end)
    return state  # write_end stays open, never written to: the kernel closes it when juncture ends


# -- the watchdog, its own side: juncture is gone, and some hooks were still running --------------------


def _reap() -> None:
    running: dict[bytes, tuple[int, float]] = {}
    for line in os.pread(_STATE_FD, os.fstat(_STATE_FD).st_size, 0).split(b"\n"):
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit():
            try:
                running[fields[0]] = (int(fields[1]), float(fields[2]))
            except ValueError:  # a slot juncture was writing as it died
                continue
    if running:
        _stop(running)


def _stop(running: dict[bytes, tuple[int, float]]) -> None:
    """The interrupt path for the hooks juncture left running: TERM, their grace, KILL."""
    groups = [pid for pid, _ in running.values()]
    deadline = time.monotonic() + max(grace for _, grace in running.values())
    if not _signal_all(groups, running, signal.SIGTERM):
        return
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not _signal_all(groups, running, 0):
            return
    for _ in range(_ROUNDS):
        if not _signal_all(groups, running, signal.SIGKILL):
            return
