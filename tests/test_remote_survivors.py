"""Nothing a hook started on an SSH host or in a container survives its timeout, juncture's death or a
lost connection: a child that called `setsid` is found by the hook's JUNCTURE_HOOK_TOKEN on the target;
a worker whose connection is gone (juncture SIGKILLed, its sshd session killed) ends its hook as a
timeout would and removes its private directory; what a worker that died anyway left in /tmp is swept
by the next run that connects to the host.

Every host is the session's loopback sshd (tests/servers.py), so the host's /proc and /tmp are this
machine's; containers are the session's Podman, looked into with `podman exec`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers.containers import app_container
from helpers.processes import carrying, gone_within, marked, wait_for_file
from test_remote import STAGE, configure, fire, host

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import Podman, SshServer

# The shapes of an escape (busybox in the test image has no nohup).
SPAWNS = {
    "setsid": "setsid sleep {m}",
    "nohup setsid": "nohup setsid sleep {m} >/dev/null 2>&1",
    "daemon": "setsid sh -c 'sleep {m} & exit 0' </dev/null >/dev/null 2>&1",
}
IN_CONTAINERS = ["setsid", "daemon"]


def escaping_hook(out: str, spawn: str, then: str = "sleep 30") -> str:
    """Records its token, its own file (in the private directory) and its pid in `out`, then starts
    `spawn` in the background and runs `then`."""
    return f'#!/bin/sh\necho "$JUNCTURE_HOOK_TOKEN $0 $$" > {out}\n{spawn} &\n{then}\n'


def recorded(path: Path) -> tuple[str, Path, int]:
    token, file, pid = wait_for_file(path).split()
    return token, Path(file).parent, int(pid)


# -- setsid on a host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spawn", SPAWNS, ids=list(SPAWNS))
def test_a_setsid_child_on_a_host_does_not_survive_the_timeout(
    project: ProjectDir, sshd: SshServer, tmp_path: Path, marker: str, spawn: str
) -> None:
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 1, "grace": 1}})
    project.hook("ping", "10-escape", escaping_hook(f"{tmp_path}/rec", SPAWNS[spawn].format(m=marker)))
    done = fire(project, "ping")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[h1] ✗ ping/10-escape  timed out after 1 s" in done.stdout
    token, directory, _ = recorded(tmp_path / "rec")
    assert gone_within(2, lambda: carrying(token)) == []
    assert gone_within(1, lambda: marked(marker)) == []
    assert not directory.exists()


def test_leftovers_kill_on_a_host_kills_what_a_hook_left_after_a_normal_exit(
    project: ProjectDir, sshd: SshServer, tmp_path: Path, marker: str
) -> None:
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "leftovers": "kill"}})
    spawn = f"setsid sleep {marker} </dev/null >/dev/null 2>&1"
    project.hook("ping", "10-daemon", escaping_hook(f"{tmp_path}/rec", spawn, "true"))
    done = fire(project, "ping")
    assert done.returncode == 0, done.stdout + done.stderr
    token, _, _ = recorded(tmp_path / "rec")
    assert gone_within(2, lambda: carrying(token)) == []
    assert marked(marker) == []


def test_a_daemon_left_on_a_host_by_a_hook_that_exits_by_itself_lives_on_by_default(
    project: ProjectDir, sshd: SshServer, tmp_path: Path, marker: str
) -> None:
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts"}})
    spawn = f"setsid sleep {marker} </dev/null >/dev/null 2>&1"
    project.hook("ping", "10-daemon", escaping_hook(f"{tmp_path}/rec", spawn, "true"))
    done = fire(project, "ping")
    assert done.returncode == 0, done.stdout + done.stderr
    assert marked(marker) != []


# -- juncture killed, connection lost ---------------------------------------------------------------------


def start_fire(project: ProjectDir, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ping", "--stage", STAGE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("victim", ["juncture", "sshd session"])
@pytest.mark.parametrize("term", ["dies on TERM", "ignores TERM"])
def test_a_host_hook_ends_and_its_directory_goes_when_its_connection_is_gone(
    project: ProjectDir, sshd: SshServer, tmp_path: Path, marker: str, victim: str, term: str
) -> None:
    """The hook (timeout 60 s) runs with a setsid child; then juncture is SIGKILLed, or the sshd process
    serving its connection is: within the grace (1 s) and a moment, nothing of the hook is left."""
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 60, "grace": 1}})
    then = f"sleep {marker}" if term == "dies on TERM" else f"trap '' TERM; sleep {marker}"
    project.hook("ping", "10-long", escaping_hook(f"{tmp_path}/rec", f"setsid sleep {marker}", then))
    proc = start_fire(project)
    try:
        token, directory, pid = recorded(tmp_path / "rec")
        assert gone_within(10, lambda: [] if len(marked(marker)) == 2 else [0]) == []
        assert directory.is_dir()
        if victim == "juncture":
            proc.kill()
        else:
            session = parent(parent(pid))  # the hook's parent is its worker shell, whose is sshd's
            with open(f"/proc/{session}/cmdline", "rb") as handle:
                assert handle.read().startswith(b"sshd: "), "not an sshd session process"
            os.kill(session, signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert gone_within(4, lambda: carrying(token)) == []
    assert marked(marker) == []
    assert gone_within(3, lambda: [1] if directory.exists() else []) == []
    if victim != "juncture":
        assert proc.returncode == 1
        assert "connection to h1 lost" in err, out + err


@pytest.fixture
def leftovers() -> Iterator[dict[str, Path]]:
    """Private directories in /tmp as dead or live workers would leave them (a live worker holds its pid
    file open as fd 9), and look-alikes that must be left alone: another user's, a symlink to a
    directory of ours, one without a pid file."""
    made: dict[str, Path] = {}
    victim = Path(f"/tmp/h1-victim-{secrets.token_hex(4)}")

    def make(kind: str, pid: int | None, owner: int | None = None) -> Path:
        path = made[kind] = Path(f"/tmp/juncture-{secrets.token_hex(5)}")
        path.mkdir(mode=0o700)
        if pid is not None:
            (path / "pid").write_text(f"{pid}\n")
        (path / "hook").write_text("#!/bin/sh\n")
        if owner is not None:
            for item in (path, *path.iterdir()):
                os.chown(item, owner, owner)
        return path

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = make("live", None)
    (live / "pid").write_text("")
    holder = subprocess.Popen(["sh", "-c", f"exec 9< {live}/pid; echo $$ > {live}/pid; exec sleep 60"])
    try:
        wait_for_file(live / "pid")
        make("dead", dead.pid)
        make("reused pid", os.getpid())  # alive, but it is not the worker that wrote it
        make("another user's", dead.pid, owner=65534)
        make("without pid file", None)
        victim.mkdir(mode=0o700)
        (victim / "pid").write_text(f"{dead.pid}\n")
        link = made["symlink"] = Path(f"/tmp/juncture-{secrets.token_hex(5)}")
        link.symlink_to(victim)
        made["symlink target"] = victim
        yield made
    finally:
        holder.kill()
        holder.wait()
        for path in made.values():
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)


def test_the_next_run_sweeps_what_dead_workers_left_and_nothing_else(
    project: ProjectDir, sshd: SshServer, leftovers: dict[str, Path]
) -> None:
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts"}})
    project.hook("ping", "10-true", "#!/bin/sh\ntrue\n")
    done = fire(project, "ping")
    assert done.returncode == 0, done.stdout + done.stderr

    def gone() -> set[str]:
        return {kind for kind, path in leftovers.items() if not os.path.lexists(path)}

    gone_within(2, lambda: [] if gone() == {"dead", "reused pid"} else [0])
    assert gone() == {"dead", "reused pid"}
    assert (leftovers["symlink target"] / "pid").exists() and leftovers["symlink"].is_symlink()
    assert (leftovers["another user's"] / "hook").exists()


# -- containers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(podman: Podman) -> Iterator[tuple[Podman, str]]:
    with app_container(podman, "survivors") as made:
        yield made


def configure_box(project: ProjectDir, name: str, event: dict[str, Any]) -> None:
    body = {
        "app": "shop",
        "events": {"ping": {"audience": "container:app", **event}},
        "stages": {
            STAGE: {
                "deploy_to": str(project.root.parent / "deployed"),
                "containers": [{"name": name, "kind": "app"}],
            }
        },
    }
    project.config(json.dumps(body) + "\n")


def inside(box: tuple[Podman, str], script: str) -> str:
    podman, name = box
    done = podman.exec(name, "sh", "-c", script)
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done.stdout


def left_inside(box: tuple[Podman, str], marker: str, token: str) -> list[str]:
    """Processes in the container running the marker's sleep or carrying the token."""
    ps = [line for line in inside(box, "ps -o pid,args").splitlines() if marker in line]
    holders = inside(box, f"grep -lszxF JUNCTURE_HOOK_TOKEN={token} /proc/[0-9]*/environ; true").split()
    return ps + holders


@pytest.mark.parametrize("spawn", IN_CONTAINERS)
def test_a_setsid_child_in_a_container_does_not_survive_the_timeout(
    project: ProjectDir, box: tuple[Podman, str], marker: str, spawn: str
) -> None:
    configure_box(project, box[1], {"timeout": 1, "grace": 1})
    rec = f"/tmp/rec-{secrets.token_hex(4)}"
    project.hook("ping", "10-escape", escaping_hook(rec, SPAWNS[spawn].format(m=marker)))
    done = project.run("fire", "ping", "--stage", STAGE, env=box[0].environ())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 1 s" in done.stdout
    token, file, _ = inside(box, f"cat {rec}").split()
    assert gone_within(3, lambda: left_inside(box, marker, token)) == []
    assert inside(box, f"ls -d {Path(file).parent} 2>/dev/null; true") == ""


def killed_mid_hook(
    project: ProjectDir, box: tuple[Podman, str], marker: str, env: dict[str, str] | None = None
) -> None:
    """SIGKILL juncture while a hook in the container runs with a setsid child: both are gone within
    the grace, and so is the session's private directory."""
    rec = f"/tmp/rec-{secrets.token_hex(4)}"
    project.hook("ping", "10-long", escaping_hook(rec, f"setsid sleep {marker}", f"sleep {marker}"))
    proc = start_fire(project, env)
    try:
        assert gone_within(20, lambda: [] if inside(box, f"cat {rec} 2>/dev/null; true") else [0]) == []
        token, file, _ = inside(box, f"cat {rec}").split()
        assert gone_within(5, lambda: [] if len(left_inside(box, marker, token)) >= 2 else [0]) == []
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert gone_within(4, lambda: left_inside(box, marker, token)) == []
    assert inside(box, f"ls -d {Path(file).parent} 2>/dev/null; true") == ""


def test_a_container_hook_ends_when_juncture_is_killed(
    project: ProjectDir, box: tuple[Podman, str], marker: str
) -> None:
    configure_box(project, box[1], {"timeout": 60, "grace": 1})
    killed_mid_hook(project, box, marker, box[0].environ())


def test_a_container_hook_on_a_host_ends_when_juncture_is_killed(
    project: ProjectDir, box: tuple[Podman, str], marker: str, tmp_path: Path
) -> None:
    """The container's worker runs through the host's SSH connection: its end reaches the worker in the
    container as the end of its input."""
    import servers

    server = servers.start_sshd(str(tmp_path / "sshd"), set_env=box[0].env)
    try:
        ssh = server.ssh_options()
        body = {
            "app": "shop",
            "events": {"ping": {"audience": "container:app", "timeout": 60, "grace": 1}},
            "stages": {
                STAGE: {
                    "deploy_to": str(tmp_path / "d"),
                    "hosts": [{"name": "h1", "address": "127.0.0.1"}],
                    "ssh": ssh,
                    "containers": [{"name": box[1], "kind": "app", "host": "h1"}],
                }
            },
        }
        project.config(json.dumps(body) + "\n")
        killed_mid_hook(project, box, marker)
    finally:
        server.stop()
