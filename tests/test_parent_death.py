"""Local hooks die with juncture, even when it is killed with SIGKILL: a watchdog holding a pipe from
juncture sees it close and gives the hooks still running the interrupt path (TERM, grace, KILL), their
setsid children included. A daemon that a finished hook left on purpose is not touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.processes import (
    carrying,
    gone_within,
    live,
    marked,
    session_leader,
    started,
    wait_for_file,
)

from conftest import ProjectDir


def start(project: ProjectDir) -> subprocess.Popen[bytes]:
    # no pipes: a survivor holding one would hang the test instead of failing it
    return subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_of_juncture_kills_the_running_hook_and_its_setsid_child(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    grace: 1\n")
    project.hook(
        "ev",
        "10-keeper",  # exits at once, leaving a daemon on purpose
        f"#!/bin/sh\nsetsid sleep {marker}1 </dev/null >/dev/null 2>&1 &\necho $! > {tmp_path}/kept\n",
    )
    project.hook(
        "ev",
        "20-long",
        f"""\
        #!/bin/sh
        echo "$JUNCTURE_HOOK_TOKEN" > {tmp_path}/token
        setsid sleep {marker}2 &
        echo $! > {tmp_path}/child
        echo $$ > {tmp_path}/hook
        sleep {marker}3
        """,
    )
    proc = start(project)
    hook = int(wait_for_file(tmp_path / "hook"))
    child = int(wait_for_file(tmp_path / "child"))
    session_leader(child)
    pids = {pid: started(pid) for pid in (hook, child)}
    token = wait_for_file(tmp_path / "token").strip()
    proc.kill()
    proc.wait(timeout=10)
    assert gone_within(3.0, lambda: [p for p, start in pids.items() if live(p, start)]) == []
    assert gone_within(1.0, lambda: carrying(token)) == []
    assert marked(f"{marker}2") == [] and marked(f"{marker}3") == []
    assert marked(f"{marker}1") != []  # the finished hook's daemon stays


def test_a_hook_ignoring_term_is_killed_after_the_grace_when_juncture_dies(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    grace: 1\n")
    project.hook(
        "ev",
        "10-deaf",
        f"#!/bin/sh\ntrap '' TERM\necho $$ > {tmp_path}/hook\nwhile :; do sleep 0.{marker[4:]}; done\n",
    )
    proc = start(project)
    hook = int(wait_for_file(tmp_path / "hook"))
    since = started(hook)
    proc.kill()
    proc.wait(timeout=10)
    assert gone_within(3.0, lambda: [hook] if live(hook, since) else []) == []


def test_the_watchdog_runs_with_the_run_and_ends_with_it(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.hook(
        "ev",
        "10-wait",
        f'#!/bin/sh\necho "$JUNCTURE_HOOK_TOKEN" > {tmp_path}/token\n'
        f"while [ ! -e {tmp_path}/go ]; do sleep 0.{marker[4:]}; done\n",
    )
    proc = start(project)
    prefix = wait_for_file(tmp_path / "token").split("-")[0]
    assert len(marked(prefix)) == 1  # one watchdog, named by the run's token prefix
    (tmp_path / "go").touch()
    assert proc.wait(timeout=30) == 0
    assert gone_within(3.0, lambda: marked(prefix)) == []
