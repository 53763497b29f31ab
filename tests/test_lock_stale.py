"""A deploy lock whose holder died: `lock status` tells free (0), locked (1) and stale (3) apart, `deploy`
and `rollback` take a stale lock over (of several takers, one wins), and `lock release` refuses a holder
that is alive or cannot be checked unless `--force`. On this machine and on the primary host of a stage
with hosts (the loopback sshd), including a holder that ran on that host itself (juncture run in a UTS
namespace of its own, so that the host's name is not this machine's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.locks import boot_id, dead_pid, lock_text, process_start
from test_deploy import _current, _deploy, _deployed, _popen_deploy, _site, _stop, _wait_for
from test_fleet_deploy import deploy_project, ok, run
from test_remote import STAGE, host

from conftest import ProjectDir, alive

if TYPE_CHECKING:
    from servers import SshServer

CANNOT_CHECK = "held from host elsewhere: cannot check whether it is alive; leases come later"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to hold a lock."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _lock(project: ProjectDir, *args: str) -> subprocess.CompletedProcess[str]:
    return project.run("lock", *args, "production")


# -- on this machine ---------------------------------------------------------------------------------


def test_status_exits_0_when_free_1_when_locked_3_when_the_holder_is_gone(
    project: ProjectDir, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    target = _site(project, tmp_path)
    free = _lock(project, "status")
    assert (free.returncode, free.stdout) == (0, "stage production: unlocked\n")

    (target / "deploy.lock").write_text(lock_text(sleeper.pid))
    held = _lock(project, "status")
    assert held.returncode == 1, held.stdout + held.stderr
    assert held.stdout == (
        f"stage production: locked, held by ghost@box (pid {sleeper.pid} on {os.uname().nodename}) since "
        "2026-01-01T00:00:00Z: deploy of version v9, run 20260101T000000Z-0ld000\n"
    )

    sleeper.kill()
    sleeper.wait()
    stale = _lock(project, "status")
    assert stale.returncode == 3, stale.stdout + stale.stderr
    assert stale.stdout.startswith(f"stage production: stale (holder pid {sleeper.pid} is gone), held by ")


def test_a_reused_pid_or_a_reboot_since_makes_the_lock_stale(
    project: ProjectDir, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """The pid lives, but it is not the process that took the lock (another start time), or the
    machine booted since (another boot id)."""
    target = _site(project, tmp_path)
    lock = target / "deploy.lock"
    lock.write_text(lock_text(sleeper.pid, start=process_start(sleeper.pid) - 1))
    reused = _lock(project, "status")
    assert reused.returncode == 3
    assert (
        f"stale (holder pid {sleeper.pid} is gone: pid {sleeper.pid} is another process now)" in reused.stdout
    )
    lock.write_text(lock_text(sleeper.pid, boot="0" * 8 + boot_id()[8:]))
    rebooted = _lock(project, "status")
    assert rebooted.returncode == 3
    nodename = os.uname().nodename
    assert f"stale (holder pid {sleeper.pid} is gone: {nodename} was restarted since)" in rebooted.stdout


def test_a_deploy_in_another_pid_namespace_is_not_taken_for_dead(project: ProjectDir, tmp_path: Path) -> None:
    """A deploy run in a pid namespace of its own (a container with this machine's name) records a pid
    that means another process here, or none: its lock counts as held, never as stale."""
    target = _site(project, tmp_path)
    ready, go = tmp_path / "ready", tmp_path / "go"
    project.hook(
        "deploy:started", "50-gate", f"#!/bin/sh\ntouch {ready}\nwhile [ ! -e {go} ]; do sleep 0.02; done\n"
    )
    command = [sys.executable, "-m", "juncture", "-C", str(project.root), "deploy", "production"]
    contained = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, contained)
        status = _lock(project, "status")
        assert status.returncode == 1, status.stdout
        assert status.stdout.rstrip().endswith(
            f"(held from another pid namespace on {os.uname().nodename}: cannot check whether it is alive)"
        )
        blocked = _deploy(project)
        assert blocked.returncode == 1
        assert "took over" not in blocked.stdout
        go.touch()
        assert contained.wait(timeout=30) == 0
        assert not (target / "deploy.lock").exists()
    finally:
        go.touch()
        _stop(contained)


def test_release_refuses_a_live_deploy_unless_forced(project: ProjectDir, tmp_path: Path) -> None:
    """A real deploy holds the lock (waiting in a hook): release names it and leaves its lock;
    --force frees it."""
    target = _site(project, tmp_path)
    ready, go = tmp_path / "ready", tmp_path / "go"
    project.hook(
        "deploy:started", "50-gate", f"#!/bin/sh\ntouch {ready}\nwhile [ ! -e {go} ]; do sleep 0.02; done\n"
    )
    holder = _popen_deploy(project)
    try:
        _wait_for(ready, holder)
        lock = (target / "deploy.lock").read_text()
        refused = _lock(project, "release")
        assert refused.returncode == 1
        assert refused.stderr.startswith("juncture: error: stage production: not releasing the lock held by ")
        assert f"(pid {holder.pid} on {os.uname().nodename})" in refused.stderr
        assert f"its holder, pid {holder.pid}, is alive; `juncture lock release --force production`" in (
            refused.stderr
        )
        assert (target / "deploy.lock").read_text() == lock
        assert _lock(project, "status").returncode == 1

        forced = _lock(project, "release", "--force")
        assert forced.returncode == 0, forced.stderr
        assert forced.stdout.startswith("stage production: released the lock held by ")
        assert forced.stdout.rstrip().endswith("(--force)")
        assert not (target / "deploy.lock").exists()
        go.touch()
        assert holder.wait(timeout=30) == 0
    finally:
        go.touch()
        _stop(holder)


def test_release_frees_a_stale_lock_and_says_whose_it_was(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    pid = dead_pid()
    (target / "deploy.lock").write_text(lock_text(pid))
    released = _lock(project, "release")
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith("stage production: released the lock held by ghost@box")
    assert released.stdout.rstrip().endswith(f"(stale: holder pid {pid} is gone)")
    assert not (target / "deploy.lock").exists()


def test_a_holder_on_another_machine_cannot_be_checked_and_is_released_only_by_force(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    (target / "deploy.lock").write_text(lock_text(dead_pid(), host="elsewhere"))
    status = _lock(project, "status")
    assert status.returncode == 1
    assert status.stdout.rstrip().endswith(f"({CANNOT_CHECK})")
    blocked = _deploy(project)
    assert blocked.returncode == 1
    assert CANNOT_CHECK in blocked.stderr
    assert "`juncture lock release --force production`" in blocked.stderr
    refused = _lock(project, "release")
    assert refused.returncode == 1
    assert CANNOT_CHECK in refused.stderr
    assert (target / "deploy.lock").exists()
    assert ok(_lock(project, "release", "--force")).stdout.rstrip().endswith("(--force)")
    assert not (target / "deploy.lock").exists()


def test_deploy_and_rollback_take_over_the_lock_of_a_killed_deploy_and_say_so(
    project: ProjectDir, tmp_path: Path
) -> None:
    """A deploy killed with SIGKILL (its hook too) leaves its lock: the next deploy takes it over."""
    target = _site(project, tmp_path)
    _deployed(project)
    ready = tmp_path / "ready"
    hook = project.hook(
        "deploy:started",
        "50-hang",
        f'#!/bin/sh\n[ -e {tmp_path}/hang ] || exit 0\necho "$$" > {ready}.tmp\nmv {ready}.tmp {ready}\nsleep 30\n',
    )
    (tmp_path / "hang").touch()
    killed = _popen_deploy(project)
    try:
        _wait_for(ready, killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    finally:
        _stop(killed)
    hook_pid = int(ready.read_text())
    if alive(hook_pid):
        os.killpg(os.getpgid(hook_pid), signal.SIGKILL)
    (tmp_path / "hang").unlink()
    assert (target / "deploy.lock").exists()
    status = _lock(project, "status")
    assert status.returncode == 3
    assert f"stale (holder pid {killed.pid} is gone)" in status.stdout

    taken = _deployed(project)
    assert taken.stdout.count("took over a stale deploy lock") == 1
    assert f"  took over a stale deploy lock (holder pid {killed.pid} is gone), held by " in taken.stdout
    assert not (target / "deploy.lock").exists()

    hook.unlink()
    (target / "deploy.lock").write_text(lock_text(dead_pid()))
    before = _current(target)
    rolled = project.run("rollback", "production")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "took over a stale deploy lock" in rolled.stdout
    assert _current(target) != before
    assert not (target / "deploy.lock").exists()


TAKER = """
import os, sys
from juncture.release import lock
for line in sys.stdin:
    directory = line.strip()
    info = lock.new_info(f"run-{os.getpid()}-{os.path.basename(directory)}", "deploy", "s", "v", "taker")
    try:
        lock.acquire(directory, info)
        print("won", flush=True)
    except lock.LockHeld:
        print("lost", flush=True)
"""


def test_of_several_processes_taking_over_one_stale_lock_exactly_one_wins(tmp_path: Path) -> None:
    """Four live processes go for the same stale lock at once, round after round: one takes it over,
    the others find it held by the winner (alive)."""
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for _ in range(4)
    ]
    try:
        for round_ in range(150):
            directory = tmp_path / f"round{round_}"
            directory.mkdir()
            (directory / "deploy.lock").write_text(lock_text(dead_pid()))
            for taker in takers:
                assert taker.stdin is not None
                taker.stdin.write(f"{directory}\n")
            results = []
            for taker in takers:
                assert taker.stdout is not None
                results.append(taker.stdout.readline().strip())
            assert sorted(results) == ["lost", "lost", "lost", "won"], f"round {round_}: {results}"
            assert not [p.name for p in directory.iterdir() if p.name != "deploy.lock"]
    finally:
        for taker in takers:
            taker.kill()
            taker.wait()


# -- on the primary host --------------------------------------------------------------------------------


def _host_project(sshd: SshServer, tmp_path: Path) -> tuple[ProjectDir, Path]:
    project = deploy_project(tmp_path, sshd, [host("h1", primary=True), host("h2")], {}, shared_file=False)
    lock = tmp_path / "deployed" / "h1" / "deploy.lock"
    lock.parent.mkdir(parents=True)
    return project, lock


def test_on_hosts_status_release_and_deploy_tell_a_stale_lock_from_a_live_one(
    sshd: SshServer, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    project, lock = _host_project(sshd, tmp_path)
    assert run(project, "lock", "status", STAGE).returncode == 0

    lock.write_text(lock_text(sleeper.pid))
    held = run(project, "lock", "status", STAGE)
    assert held.returncode == 1
    assert held.stdout.startswith(f"[h1] stage {STAGE}: locked, held by ghost@box (pid {sleeper.pid} on ")
    refused = run(project, "lock", "release", STAGE)
    assert refused.returncode == 1
    assert f"not releasing the lock on h1 held by ghost@box (pid {sleeper.pid}" in refused.stderr
    assert lock.exists()
    blocked = run(project, "deploy", STAGE)
    assert blocked.returncode == 1
    assert f"stage {STAGE} is locked on h1: held by ghost@box" in blocked.stderr

    sleeper.kill()
    sleeper.wait()
    stale = run(project, "lock", "status", STAGE)
    assert stale.returncode == 3
    assert stale.stdout.startswith(f"[h1] stage {STAGE}: stale (holder pid {sleeper.pid} is gone), held by ")
    taken = ok(run(project, "deploy", STAGE))
    assert f"took over a stale deploy lock (holder pid {sleeper.pid} is gone)" in taken.stdout
    assert not lock.exists()

    lock.write_text(lock_text(dead_pid()))
    released = ok(run(project, "lock", "release", STAGE))
    assert released.stdout.startswith(f"[h1] stage {STAGE}: released the lock held by ghost@box")
    assert "(stale: holder pid " in released.stdout
    assert not lock.exists()


def _as_operator(project: ProjectDir, *args: str) -> subprocess.CompletedProcess[str]:
    """juncture on a machine named `operator`: this one, in a UTS namespace of its own."""
    command = [sys.executable, "-m", "juncture", "-C", str(project.root), *args]
    done = subprocess.run(
        ["unshare", "--uts", "sh", "-c", 'hostname operator && exec "$@"', "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "unshare failed" in done.stderr:
        pytest.skip(f"no UTS namespace here: {done.stderr.strip()}")
    return done


def test_on_hosts_a_holder_that_ran_on_the_host_itself_is_checked_there(
    sshd: SshServer, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """The lock names the host's own name (a juncture run there): the operator, on another machine,
    checks the holder's pid on the host; a holder on a third machine cannot be checked."""
    project, lock = _host_project(sshd, tmp_path)
    lock.write_text(lock_text(sleeper.pid))  # recorded by "the host" (this machine's name)
    held = _as_operator(project, "lock", "status", STAGE)
    assert held.returncode == 1, held.stdout + held.stderr
    assert "cannot check" not in held.stdout

    lock.write_text(lock_text(dead_pid()))
    stale = _as_operator(project, "lock", "status", STAGE)
    assert stale.returncode == 3, stale.stdout + stale.stderr
    taken = _as_operator(project, "deploy", STAGE)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "took over a stale deploy lock" in taken.stdout

    lock.write_text(lock_text(dead_pid(), host="elsewhere"))
    unknown = _as_operator(project, "lock", "status", STAGE)
    assert unknown.returncode == 1
    assert unknown.stdout.rstrip().endswith(f"({CANNOT_CHECK})")
    assert _as_operator(project, "lock", "release", STAGE).returncode == 1
    assert lock.exists()
    assert _as_operator(project, "lock", "release", "--force", STAGE).returncode == 0
    assert not lock.exists()


def test_on_hosts_of_several_runs_taking_over_one_stale_lock_exactly_one_wins(
    sshd: SshServer, tmp_path: Path
) -> None:
    """Threads of one juncture process take the same stale lock on the host at once, over the real
    SSH connection: one wins; the others find it held by a live process (this one)."""
    from juncture.pipeline.hosts import host_targets
    from juncture.project import load_project
    from juncture.release import lock as locks

    project_dir, lock = _host_project(sshd, tmp_path)
    project = load_project(str(project_dir.root))
    stage = project.config.deploy.stages[STAGE]
    primary = stage.placement.primary
    assert primary is not None
    with host_targets(project, stage, [primary]) as (targets, unreachable):
        assert not unreachable
        target = targets[primary.name]
        for round_ in range(8):
            lock.write_text(lock_text(dead_pid()))
            results: dict[int, str] = {}
            gate = threading.Barrier(4)

            def take(index: int, round_: int, results: dict[int, str], gate: threading.Barrier) -> None:
                info = locks.new_info(f"run-{round_}-{index}", "deploy", STAGE, "v", f"taker{index}")
                gate.wait()
                try:
                    target.lock(info, 0.0)
                    results[index] = "won"
                except locks.LockHeld:
                    results[index] = "lost"

            threads = [threading.Thread(target=take, args=(i, round_, results, gate)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(results.values()) == ["lost", "lost", "lost", "won"], f"round {round_}: {results}"
            assert not [p.name for p in lock.parent.iterdir() if p.name != "deploy.lock"]
