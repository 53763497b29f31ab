"""Processes of this machine seen through /proc: who carries a hook's token, and waiting for them to go."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "carrying",
    "gone_within",
    "kill_marked",
    "live",
    "marked",
    "session_leader",
    "started",
    "wait_for_file",
]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def live(pid: int, start: int | None = None) -> bool:
    """True while `pid` exists and is not a zombie (and, given its `start`, is still that process: pids
    wrap around quickly on a busy machine)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and (start is None or int(stat[19]) == start)


def started(pid: int) -> int:
    """The start time of `pid` (clock ticks after boot), which tells it from a later process of that pid."""
    stat = _stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return int(stat[19])


def session_leader(pid: int, seconds: float = 10) -> None:
    """Wait until `pid` has called setsid (it leads a session of its own)."""
    deadline = time.monotonic() + seconds
    while True:
        stat = _stat(pid)
        assert stat is not None, f"{pid} is gone"
        if int(stat[3]) == pid:
            return
        assert time.monotonic() < deadline, f"{pid} never called setsid"
        time.sleep(0.01)


def carrying(token: str) -> list[int]:
    """Live processes whose environment holds JUNCTURE_HOOK_TOKEN=`token` exactly."""
    entry = f"JUNCTURE_HOOK_TOKEN={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
        except OSError:
            continue
        if entry in env and live(int(name)):
            found.append(int(name))
    return found


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return text.encode() in handle.read()
    except OSError:
        return False


def marked(text: str) -> list[int]:
    """Live processes whose command line contains `text` (a test's unique `sleep` duration)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, text) and live(int(p))]


def kill_marked(text: str) -> None:
    """SIGKILL whatever a test left behind (found by `marked`)."""
    for pid in marked(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def gone_within(seconds: float, left: Callable[[], list[int]]) -> list[int]:
    """What `left()` still returns after up to `seconds` (signals take a moment to land)."""
    deadline = time.monotonic() + seconds
    while (found := left()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_for_file(path: Path, seconds: float = 20, lines: int = 1) -> str:
    """The text of `path` once it has `lines` complete lines."""
    deadline = time.monotonic() + seconds
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= lines:
            return text
        assert time.monotonic() < deadline, f"{path} never got {lines} line(s): {text!r}"
        time.sleep(0.02)
