"""SIGINT or SIGTERM to juncture: the running hook's process group is terminated, exit 130."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ProjectDir, alive


def _wait_for(path: Path, lines: int = 1, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() or len(path.read_text().split()) < lines:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_terminates_running_hook_group_and_exits_130(
    project: ProjectDir, tmp_path: Path, signum: signal.Signals
) -> None:
    pids = tmp_path / "pids"
    project.hook("ev", "10-first", f"#!/bin/sh\nsleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    project.hook("ev", "20-second", f"#!/bin/sh\ntouch {tmp_path}/second\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(pids, lines=2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        f"juncture: event ev interrupted: {project.root}/.juncture/hooks/ev.d/10-first"
    ]
    assert not (tmp_path / "second").exists()
    assert [pid for pid in map(int, pids.read_text().split()) if alive(int(pid))] == []


def test_hook_ignoring_term_is_killed_after_grace_on_interrupt(project: ProjectDir, tmp_path: Path) -> None:
    project.config("grace: 0.5\n")
    pid_file = tmp_path / "pid"
    project.hook(
        "ev", "10-deaf", f"#!/bin/sh\ntrap '' TERM\necho $$ > {pid_file}\nwhile :; do sleep 0.05; done\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_for(pid_file)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert '"status": "interrupted"' in out
    assert not alive(int(pid_file.read_text()))
