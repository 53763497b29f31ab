"""Deploy lock files written the way juncture writes them, for a holder that is alive, dead, on another
machine or recorded by a host itself; and a read-only directory (a read-only bind mount: root ignores
file modes, so 0555 would not stop it)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["boot_id", "dead_pid", "lock_text", "process_start", "read_only_dir"]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_start(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the process's start time in clock ticks after boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def dead_pid() -> int:
    """The pid of a process that ran and was reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def lock_text(
    pid: int,
    *,
    host: str | None = None,
    start: int | None = None,
    boot: str | None = None,
    run_id: str = "20260101T000000Z-0ld000",
    stage: str = "production",
) -> str:
    """A lock held by `pid` on `host` (default: this machine), with its start time, boot id and pid
    namespace (this test's) as juncture records them (the start of a live `pid`, else 1)."""
    if start is None:
        start = process_start(pid) if os.path.exists(f"/proc/{pid}") else 1
    return json.dumps(
        {
            "run_id": run_id,
            "verb": "deploy",
            "stage": stage,
            "version": "v9",
            "performer": "ghost@box",
            "host": host if host is not None else os.uname().nodename,
            "pid": pid,
            "since": "2026-01-01T00:00:00Z",
            "start": start,
            "boot": boot if boot is not None else boot_id(),
            "pidns": os.readlink("/proc/self/ns/pid"),
        }
    )


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """`path` (created) made read-only by a read-only bind mount of itself; unmounted on leaving."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a bind mount is missing in CI: {done.stderr.strip()}")
        pytest.skip(f"a bind mount needs root: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
