"""No half states: a deploy that never took the lock pages no one (`deploy:failed` runs only once the lock
is taken), a full disk on a host leaves no `NAME.partial` there, and a read-only `deploy_to` is one clear
line naming the directory, leaving no lock and no release. On this machine and on SSH hosts (the
loopback sshd)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.locks import lock_text, read_only_dir
from test_deploy import _deploy, _deployed, _failure_recorder, _read_failure, _site, _write_files
from test_fleet_deploy import deploy_project, env_dump, ok, run
from test_remote import STAGE, host

from conftest import ProjectDir

if TYPE_CHECKING:
    import subprocess

    from servers import SshServer

FAILED_EVENT = {"deploy:failed": {"audience": ["local", "hosts"], "timeout": 20}}


def _leftovers(deploy_to: Path) -> list[str]:
    """What a failed run must not leave: a lock, a staged lock, a partial release."""
    found = [p.name for p in deploy_to.glob("deploy.lock*")]
    return found + [p.name for p in (deploy_to / "releases").glob("*.partial")]


# -- deploy:failed only once the lock is taken ------------------------------------------------------


def test_a_deploy_that_finds_the_lock_held_runs_no_failure_hooks_but_one_that_fails_later_does(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    for _ in range(2):  # a release to roll back to
        _deployed(project)
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))
    (target / "deploy.lock").write_text(lock_text(os.getpid()))  # held by this live test

    blocked = _deploy(project)
    assert blocked.returncode == 1
    assert "juncture: deploy failed in deploy:starting: stage production is locked" in blocked.stderr
    assert not out.exists(), "deploy:failed ran for a deploy that never started"
    rolled = project.run("rollback", "production")
    assert rolled.returncode == 1
    assert not out.exists(), "deploy:failed ran for a rollback that never started"

    (target / "deploy.lock").unlink()
    project.hook("deploy:check", "50-fail", "#!/bin/sh\nexit 3\n")  # right after the lock
    failed = _deploy(project)
    assert failed.returncode == 1
    assert _read_failure(out)["ERROR_PHASE"] == "deploy:check"
    assert _leftovers(target) == []


def test_on_hosts_a_deploy_that_finds_the_lock_held_runs_no_failure_hooks_anywhere(
    sshd: SshServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    project = deploy_project(
        tmp_path, sshd, [host("h1", primary=True), host("h2")], FAILED_EVENT, shared_file=False
    )
    project.hook("deploy:failed", "10-tell", env_dump(out, "failed", "ERROR_PHASE"))
    lock = tmp_path / "deployed" / "h1" / "deploy.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(lock_text(os.getpid(), stage=STAGE))

    blocked = run(project, "deploy", STAGE)
    assert blocked.returncode == 1
    assert not list(out.iterdir()), "deploy:failed ran for a deploy that never started"
    assert f"stage {STAGE} is locked on h1: held by ghost@box" in blocked.stderr

    lock.unlink()
    project.hook("deploy:check", "50-fail", "#!/bin/sh\nexit 3\n")
    failed = run(project, "deploy", STAGE)
    assert failed.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["failed-h1", "failed-h2", "failed-localhost"]
    assert not lock.exists()


# -- a full disk on a host ---------------------------------------------------------------------------


def _host_project(tmp_path: Path, sshd: SshServer, under: Path, out: Path) -> ProjectDir:
    """A host stage with h1 deploying to `under/h1`; its deploy:failed hook writes `out/failed-h1`."""
    out.mkdir()
    project = deploy_project(
        tmp_path,
        sshd,
        [host("h1", primary=True)],
        FAILED_EVENT,
        shared_file=False,
        deploy_to=str(under / "{{ host.name }}"),
    )
    project.hook("deploy:failed", "10-tell", env_dump(out, "failed", "ERROR_PHASE"))
    return project


def test_on_a_host_a_full_disk_fails_the_build_and_leaves_no_partial_release(
    sshd: SshServer, tmp_path: Path, small_fs: Path
) -> None:
    out = tmp_path / "out"
    project = _host_project(tmp_path, sshd, small_fs, out)
    ok(run(project, "deploy", STAGE))
    previous = os.readlink(small_fs / "h1" / "current")
    # 3 MiB more than the 2 MiB file system holds
    _write_files(project.root / "app", {f"assets/a{i:03d}.bin": "x" * 10_000 for i in range(300)})

    failed = run(project, "deploy", STAGE)

    assert failed.returncode == 1
    deploy_to = small_fs / "h1"
    assert _leftovers(deploy_to) == []
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("juncture: deploy failed in deploy:updating: h1: building release ")
    assert "No space left on device" in line
    assert os.readlink(deploy_to / "current") == previous
    assert sorted(os.listdir(deploy_to / "releases")) == [os.path.basename(previous)]
    assert (out / "failed-h1").read_text() == "ERROR_PHASE=deploy:updating\n"


# -- a read-only deploy_to ---------------------------------------------------------------------------


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "internal error" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    return line


def test_a_read_only_deploy_to_is_one_line_naming_it_and_leaves_nothing(
    project: ProjectDir, tmp_path: Path
) -> None:
    out = tmp_path / "failed"
    with read_only_dir(tmp_path / "ro") as deploy_to:
        _site(project, tmp_path, deploy_to=deploy_to)
        project.hook("deploy:failed", "50-record", _failure_recorder(out))
        done = _deploy(project)
        assert done.returncode == 1
        assert _one_line(done) == (
            "juncture: deploy failed in deploy:starting: cannot take the deploy lock: "
            f"{deploy_to} is not writable (Read-only file system) (no current release)"
        )
        assert os.listdir(deploy_to) == []
        assert not out.exists()
        status = project.run("lock", "status", "production")
        assert (status.returncode, status.stdout) == (0, "stage production: unlocked\n")


def test_on_a_host_a_read_only_deploy_to_is_one_line_naming_it_and_leaves_nothing(
    sshd: SshServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mount = tmp_path / "ro"
    (mount / "h1").mkdir(parents=True)
    project = _host_project(tmp_path, sshd, mount, out)
    with read_only_dir(mount):
        done = run(project, "deploy", STAGE)
        assert done.returncode == 1
        assert _one_line(done) == (
            "juncture: deploy failed in deploy:starting: h1: cannot take the deploy lock: "
            f"{mount / 'h1'} is not writable (Read-only file system) (no host was changed)"
        )
        assert os.listdir(mount / "h1") == []
        assert not list(out.iterdir())
        missing = tmp_path / "proj" / "juncture.yaml"
        missing.write_text(missing.read_text().replace("{{ host.name }}", "{{ host.name }}/new"))
        created = run(project, "deploy", STAGE)
        assert _one_line(created) == (
            "juncture: deploy failed in deploy:starting: h1: cannot create "
            f"{mount / 'h1' / 'new'}: Read-only file system (no host was changed)"
        )
        status = run(project, "lock", "status", STAGE)
        assert (status.returncode, status.stdout) == (0, f"[h1] stage {STAGE}: unlocked\n")
