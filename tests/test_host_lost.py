"""A host lost mid-hook under an `abort` event: the other hosts' running hooks are not waited for until
their own (long) timeouts; they get the interrupt path at once (TERM, grace, KILL) and the report says
why. Two host names for the one loopback sshd; one host's session is killed under its hook."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.processes import gone_within, kill_marked, live, started, wait_for_file

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import SshServer


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def below(pid: int) -> list[int]:
    """`pid`'s descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError):
            if name.isdigit():
                children.setdefault(parent_of(int(name)), []).append(int(name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_a_lost_host_interrupts_the_other_hosts_hooks_at_once(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    marker = f"300.{secrets.randbelow(10**9):09d}"
    ssh = sshd.ssh_options(connect_timeout=5)
    hosts = [{"name": name, "address": "127.0.0.1"} for name in ("web-1", "web-2")]
    config = {
        "app": "shop",
        "events": {"ping": {"audience": "hosts", "timeout": 300, "grace": 1}},
        "stages": {"fleet": {"deploy_to": str(tmp_path / "deployed"), "hosts": hosts, "ssh": ssh}},
    }
    project.config(json.dumps(config) + "\n")
    project.hook("ping", "10-wait", f"#!/bin/sh\necho $$ > {tmp_path}/pid-$JUNCTURE_HOST\nsleep {marker}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ping", "--stage", "fleet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not all((tmp_path / f"pid-{name}").exists() for name in ("web-1", "web-2")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hooks never started"
            time.sleep(0.02)
        lost = int(wait_for_file(tmp_path / "pid-web-2"))
        other = int(wait_for_file(tmp_path / "pid-web-1"))
        since = started(other)
        session = lost  # the sshd process serving web-2's connection: a child of the listener
        while parent_of(session) != sshd.pid:
            session = parent_of(session)
        killed_at = time.monotonic()
        for pid in [session, *below(session)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        kill_marked(marker)
    assert seconds < 10, f"the run took {seconds:.1f} s after the host was lost"
    assert proc.returncode == 1, err
    assert err.startswith("juncture: [web-2] event ping aborted: "), err
    assert "connection to web-2 lost" in err
    assert "[web-1] ✗ ping/10-wait  was interrupted: host web-2 lost" in out, out
    assert gone_within(3.0, lambda: [other] if live(other, since) else []) == []
