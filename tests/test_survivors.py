"""Nothing a local hook started survives its timeout or an interrupt, not even a child that called
`setsid` (its own session and group): every hook carries JUNCTURE_HOOK_TOKEN, and juncture kills every
process that holds the hook's token. A hook that exits by itself may leave a daemon on purpose
(`leftovers: keep`, the default) or not (`leftovers: kill`); a daemon started without the variable opts
out."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
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

TOKEN = re.compile(r"[0-9a-f]{16}-[0-9]+\Z")


def hook_body(tmp_path: Path, spawn: str, then: str = "sleep 30") -> str:
    """Records its token and the pid of what it spawns in the background, then `then`."""
    return f"""\
        #!/bin/sh
        echo "$JUNCTURE_HOOK_TOKEN" > {tmp_path}/token
        {spawn} &
        echo $! > {tmp_path}/child
        {then}
        """


def token_of(tmp_path: Path) -> str:
    token = wait_for_file(tmp_path / "token").strip()
    assert TOKEN.match(token), f"not a hook token: {token!r}"
    return token


SPAWNS = {
    "setsid": "setsid sleep {m}",
    "nohup setsid": "nohup setsid sleep {m} >/dev/null 2>&1",
    # a daemon: forks, leaves the session, closes its output, and its parent exits at once
    "daemon": "setsid sh -c 'sleep {m} & exit 0' </dev/null >/dev/null 2>&1",
}


@pytest.mark.parametrize("spawn", SPAWNS, ids=list(SPAWNS))
def test_a_setsid_child_does_not_survive_the_timeout(
    project: ProjectDir, tmp_path: Path, marker: str, spawn: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    timeout: 1\n    grace: 0.5\n")
    project.hook("ev", "10-escape", hook_body(tmp_path, SPAWNS[spawn].format(m=marker)))
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 1, done.stderr
    assert "timed out after 1 s" in done.stderr
    token = token_of(tmp_path)
    assert gone_within(1.0, lambda: carrying(token)) == []
    assert gone_within(1.0, lambda: marked(marker)) == []


@pytest.mark.parametrize("spawn", ["setsid", "nohup setsid"])
def test_a_setsid_child_does_not_survive_an_interrupt(
    project: ProjectDir, tmp_path: Path, marker: str, spawn: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    grace: 0.5\n")
    project.hook("ev", "10-escape", hook_body(tmp_path, SPAWNS[spawn].format(m=marker)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = int(wait_for_file(tmp_path / "child"))
    session_leader(child)
    start = started(child)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    token = token_of(tmp_path)
    assert gone_within(1.0, lambda: carrying(token)) == []
    assert not live(child, start)
    assert marked(marker) == []


def test_a_daemon_left_by_a_hook_that_exits_by_itself_lives_on_by_default(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.hook(
        "ev", "10-start", hook_body(tmp_path, f"setsid sleep {marker} </dev/null >/dev/null 2>&1", "true")
    )
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 0, done.stderr
    assert marked(marker) != []
    assert carrying(token_of(tmp_path)) != []


def test_leftovers_kill_kills_what_a_hook_leaves_after_a_normal_exit(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    leftovers: kill\n")
    project.hook(
        "ev", "10-start", hook_body(tmp_path, f"setsid sleep {marker} </dev/null >/dev/null 2>&1", "true")
    )
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 0, done.stderr
    assert gone_within(1.0, lambda: carrying(token_of(tmp_path))) == []
    assert gone_within(1.0, lambda: marked(marker)) == []


def test_a_daemon_started_without_the_token_opts_out_and_survives_the_timeout(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    timeout: 1\n    grace: 0.5\n")
    spawn = f"env -u JUNCTURE_HOOK_TOKEN setsid sleep {marker} </dev/null >/dev/null 2>&1"
    project.hook("ev", "10-daemon", hook_body(tmp_path, spawn))
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 1, done.stderr
    assert marked(marker) != []


def test_every_hook_gets_its_own_token_under_its_fixed_name_whatever_env_prefix_is(
    project: ProjectDir, tmp_path: Path
) -> None:
    project.config("app: shop\nenv_prefix: KAMAL_\nevents:\n  ev:\n    parallel: 2\n")
    for name in ("10-a", "20-b", "30-c"):
        project.hook("ev", name, f'#!/bin/sh\necho "$JUNCTURE_HOOK_TOKEN" >> {tmp_path}/tokens\n')
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 0, done.stderr
    tokens = (tmp_path / "tokens").read_text().split()
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert all(TOKEN.match(t) for t in tokens)
    assert len({t.split("-")[0] for t in tokens}) == 1  # one prefix per run


def test_a_hook_trapping_term_gets_it_once_while_its_setsid_child_gets_it_too(
    project: ProjectDir, tmp_path: Path, marker: str
) -> None:
    project.config("app: shop\nevents:\n  ev:\n    timeout: 1\n    grace: 1\n")
    project.hook(
        "ev",
        "10-trap",
        f"""\
        #!/bin/sh
        trap 'echo TERM >> {tmp_path}/terms' TERM
        setsid sh -c 'trap "echo TERM >> {tmp_path}/child-terms; exit" TERM; sleep {marker} & wait' &
        while :; do sleep 0.05; done
        """,
    )
    done = project.run("fire", "ev", timeout=30)
    assert done.returncode == 1, done.stderr
    assert (tmp_path / "terms").read_text() == "TERM\n"  # from its group's signal, not again by token
    assert (tmp_path / "child-terms").read_text() == "TERM\n"
    assert gone_within(1.0, lambda: marked(marker)) == []


def test_leftovers_takes_keep_or_kill_only(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  ev:\n    leftovers: sometimes\n")
    done = project.run("check")
    assert done.returncode == 2
    assert "juncture.yaml:4:" in done.stderr and "expected keep or kill" in done.stderr, done.stderr
