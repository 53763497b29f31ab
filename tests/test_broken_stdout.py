"""A broken output stream never leaves a half state: a reader that leaves (`| head -1`, a dropped CI log
pipe), a closed terminal (EIO), a stream closed from the start (`>&-`) or one left non-blocking. juncture
stops writing there, runs to the end (logs and history keep everything) and exits with the run's true
status. And a release that never went live is no rollback target, here and on hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import SshServer

STAGE = "production"
LINES = 3000  # each chatty hook prints 1..LINES, far more than a pipe holds
CHATTY = f"#!/bin/sh\nseq 1 {LINES}\n"


@dataclass
class Ended:
    code: int
    first: bytes  # what the reader read before it left
    stderr: str  # "" when stderr went the way of stdout


def command(project: ProjectDir, *args: str) -> list[str]:
    return [sys.executable, "-m", "juncture", "-C", str(project.root), *args]


def reader_leaves(project: ProjectDir, how: str, *args: str) -> Ended:
    """Run juncture and lose its output after the first line: `pipe`, the reader of stdout closes it;
    `both`, stdout and stderr share that pipe; `pty`, both go to a terminal that is closed (EIO)."""
    if how == "pty":
        master, slave = os.openpty()
        proc = subprocess.Popen(command(project, *args), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        first = b""
        while b"\n" not in first:
            first += os.read(master, 4096)
        os.close(master)  # the terminal is gone: writes to it fail with EIO
        return Ended(proc.wait(timeout=60), first, "")
    proc = subprocess.Popen(
        command(project, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if how == "both" else subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    return Ended(proc.returncode, first, (err or b"").decode())


def stdout_gone(project: ProjectDir, *args: str) -> Ended:
    """Run juncture with stdout a pipe whose reader left before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen(command(project, *args), stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=60)
    return Ended(proc.returncode, b"", err.decode())


def stage_project(project: ProjectDir, tmp_path: Path, extra: str = "") -> Path:
    target = tmp_path / "target"
    (project.root / "app").mkdir()
    (project.root / "app" / "index.html").write_text("hello\n")
    project.config(f"app: shop\nsource: app\nstages:\n  {STAGE}: {{deploy_to: {target}}}\n{extra}")
    return target


def chatty_deploy(project: ProjectDir, tmp_path: Path, fail: bool) -> Path:
    """Hooks that print plenty in every phase; with `fail`, one before publishing exits 3.
    deploy:failed prints plenty too, then leaves a marker."""
    target = stage_project(project, tmp_path)
    for event in ("deploy:updated", "deploy:published", "post-deploy"):
        project.hook(event, "10-chatty", CHATTY)
    if fail:
        project.hook("deploy:updated", "20-fails", f"{CHATTY}exit 3\n")
    project.hook("deploy:failed", "10-mark", f"{CHATTY}echo ran > {tmp_path}/failed-ran\n")
    return target


def last_run(project: ProjectDir) -> dict[str, object]:
    done = project.run("history", "--json")
    assert done.returncode == 0, done.stderr
    run: dict[str, object] = json.loads(done.stdout)[0]
    return run


def hook_log(project: ProjectDir, run_id: object, name: str) -> str:
    found = list((project.root / ".juncture" / "logs" / str(run_id)).rglob(f"*{name}*"))
    assert found, f"no log of {name} for run {run_id}"
    return found[0].read_text()


def current(target: Path) -> str | None:
    link = target / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def releases(target: Path) -> list[str]:
    directory = target / "releases"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


HOW = ["pipe", "both", "pty"]


@pytest.mark.parametrize("how", HOW)
def test_a_deploy_whose_output_is_lost_completes_and_exits_0(
    project: ProjectDir, tmp_path: Path, how: str
) -> None:
    target = chatty_deploy(project, tmp_path, fail=False)

    ended = reader_leaves(project, how, "deploy", STAGE, "-v")

    assert ended.first.startswith(b"deploy shop to stage production")
    assert ended.code == 0, ended.stderr
    assert ended.stderr == ""  # nothing to say: no error, no traceback
    (release,) = releases(target)
    assert current(target) == release
    assert f" deployed release={release} " in (target / "revisions.log").read_text()
    assert not (target / "deploy.lock").exists()
    run = last_run(project)
    assert (run["status"], run["exit_code"]) == ("ok", 0)
    assert hook_log(project, run["id"], "chatty").split()[-1] == str(LINES)  # the logs have it all
    assert not (tmp_path / "failed-ran").exists()


@pytest.mark.parametrize("how", HOW)
def test_a_failing_deploy_whose_output_is_lost_cleans_up_and_exits_1(
    project: ProjectDir, tmp_path: Path, how: str
) -> None:
    target = chatty_deploy(project, tmp_path, fail=True)

    ended = reader_leaves(project, how, "deploy", STAGE, "-v")

    assert ended.code == 1
    assert "Traceback" not in ended.stderr
    if how == "pipe":
        assert ended.stderr.startswith("juncture: deploy failed in deploy:updated: ")
    assert (tmp_path / "failed-ran").read_text() == "ran\n"  # deploy:failed ran to its end
    assert releases(target) == []  # the release that never went live is gone
    assert current(target) is None
    assert not (target / "deploy.lock").exists()
    run = last_run(project)
    assert (run["status"], run["exit_code"]) == ("failed", 1)


def test_a_deploy_with_stdout_and_stderr_closed_from_the_start_runs_and_keeps_the_store_intact(
    project: ProjectDir, tmp_path: Path
) -> None:
    """`>&- 2>&-`: fds 1 and 2 are not open, and the next file opened must not take their place."""
    target = chatty_deploy(project, tmp_path, fail=False)
    closed = ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *command(project, "deploy", STAGE, "-v")]

    done = subprocess.run(closed, capture_output=True, timeout=60)

    assert done.returncode == 0
    assert current(target) == releases(target)[0]
    assert not (target / "deploy.lock").exists()
    run = last_run(project)  # the store opens and reads: nothing was written into it
    assert (run["status"], run["exit_code"]) == ("ok", 0)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_non_blocking_stdout_is_waited_on_and_loses_no_line(
    project: ProjectDir, tmp_path: Path, unbuffered: bool
) -> None:
    """A stream another process made non-blocking (O_NONBLOCK is shared with it), read slowly."""
    target = chatty_deploy(project, tmp_path, fail=False)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        proc = subprocess.Popen(
            command(project, "deploy", STAGE, "-v"), stdout=write_end, stderr=subprocess.PIPE, env=env
        )
    finally:
        os.close(write_end)
    time.sleep(0.5)  # the pipe fills: juncture's writes meet EAGAIN
    with os.fdopen(read_end, "rb") as reader:
        out = reader.read().decode()
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    numbers = [line.rsplit("] ", 1)[1] for line in out.splitlines() if "[10-chatty] " in line]
    assert numbers == [str(n) for n in range(1, LINES + 1)] * 3  # every line, in order
    assert out.splitlines()[-1].startswith("deployed ")
    assert not (target / "deploy.lock").exists()


# -- the other commands --------------------------------------------------------------------------------


def fire_project(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("build", "10-chatty", CHATTY)
    project.hook("build", "20-fails", f"#!/bin/sh\ntouch {tmp_path}/fails-ran\nexit 4\n")


def test_fire_with_stdout_gone_runs_every_hook_and_exits_with_their_status(
    project: ProjectDir, tmp_path: Path
) -> None:
    fire_project(project, tmp_path)

    ended = stdout_gone(project, "fire", "build")

    assert ended.code == 1
    assert (tmp_path / "fails-ran").exists()
    assert ended.stderr.startswith("juncture: event build aborted")
    assert "Traceback" not in ended.stderr


def test_fire_json_whose_reader_leaves_after_the_first_line_exits_with_the_hooks_status(
    project: ProjectDir, tmp_path: Path
) -> None:
    fire_project(project, tmp_path)

    ended = reader_leaves(project, "pipe", "fire", "build", "--json")

    assert json.loads(ended.first)["type"] == "run-start"
    assert ended.code == 1
    assert (tmp_path / "fails-ran").exists()
    assert ended.stderr == ""  # --json: the result was for stdout
    run = last_run(project)
    assert (run["status"], run["exit_code"]) == ("failed", 1)
    assert hook_log(project, run["id"], "chatty").split()[-1] == str(LINES)


def test_run_with_stdout_gone_exits_with_the_tasks_status(project: ProjectDir, tmp_path: Path) -> None:
    stage_project(project, tmp_path, f'tasks:\n  main: {{run: "seq 1 {LINES}; exit 3"}}\n')

    ended = stdout_gone(project, "run", STAGE, "main", "-v")

    assert ended.code == 1
    assert "task main" in ended.stderr and "exited with code 3" in ended.stderr
    assert "Traceback" not in ended.stderr


def test_rollback_with_stdout_gone_rolls_back_and_exits_0(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    project.hook("deploy:rollback", "10-chatty", CHATTY)
    for _ in range(2):
        assert project.run("deploy", STAGE).returncode == 0
    first, second = releases(target)

    ended = stdout_gone(project, "rollback", STAGE, "-v")

    assert (ended.code, ended.stderr) == (0, "")
    assert current(target) == first
    assert f" rolled-back release={first} from={second} " in (target / "revisions.log").read_text()
    assert not (target / "deploy.lock").exists()


@pytest.mark.parametrize("args", [("history",), ("history", "--json"), ("list",), ("list", "-v")])
def test_read_only_commands_with_stdout_gone_exit_0_without_a_word(
    project: ProjectDir, tmp_path: Path, args: tuple[str, ...]
) -> None:
    fire_project(project, tmp_path)
    assert project.run("fire", "build").returncode == 1  # a run for history to show

    assert stdout_gone(project, *args) == Ended(0, b"", "")


# -- a release that never went live is no rollback target -----------------------------------------------

A, UNPUBLISHED, C = "20200101000000", "20200101000001", "20200101000002"


def release_tree(deploy_to: Path, published: tuple[str, ...]) -> None:
    """Releases A, UNPUBLISHED and C, current -> C; revisions.log records `published` as deployed. The
    middle one is what a deploy killed between build and publish leaves."""
    for name in (A, UNPUBLISHED, C):
        (deploy_to / "releases" / name).mkdir(parents=True)
        (deploy_to / "releases" / name / "index.html").write_text(name)
    with (deploy_to / "revisions.log").open("w") as log:
        for name in published:
            log.write(f"2020-01-01T00:00:00Z deployed release={name} version=v{name} by=me run=r\n")
    (deploy_to / "current").symlink_to(f"releases/{C}")


def test_rollback_skips_a_release_that_never_went_live_and_refuses_it_as_to(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    release_tree(target, (A, C))

    refused = project.run("rollback", STAGE, "--to", UNPUBLISHED)

    assert refused.returncode == 2
    assert refused.stderr == (
        f"juncture: error: release {UNPUBLISHED} was never published ({target}/revisions.log records no "
        "deploy of it; a failed deploy left it): not a rollback target\n"
    )
    assert current(target) == C
    assert not (target / "deploy.lock").exists()

    back = project.run("rollback", STAGE)

    assert back.returncode == 0, back.stderr
    assert current(target) == A


def test_rollback_without_any_published_release_before_current_refuses(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    release_tree(target, ())

    done = project.run("rollback", STAGE)

    assert done.returncode == 2
    assert f"never published: {A}, {UNPUBLISHED}" in done.stderr
    assert current(target) == C


def test_rollback_on_hosts_never_goes_to_a_release_that_never_went_live(
    sshd: SshServer, tmp_path: Path
) -> None:
    from test_fleet_deploy import currents, deploy_project
    from test_remote import STAGE as FLEET
    from test_remote import host

    project = deploy_project(tmp_path, sshd, [host("h1", primary=True), host("h2")], {}, shared_file=False)
    trees = {name: tmp_path / "deployed" / name for name in ("h1", "h2")}
    for tree in trees.values():
        release_tree(tree, (A, C))

    refused = project.run("rollback", FLEET, "--to", UNPUBLISHED)

    assert refused.returncode == 1
    assert f"release {UNPUBLISHED} was never published" in refused.stderr
    assert currents(tmp_path, ("h1", "h2")) == {"h1": C, "h2": C}

    back = project.run("rollback", FLEET)

    assert back.returncode == 0, back.stderr
    assert currents(tmp_path, ("h1", "h2")) == {"h1": A, "h2": A}

    # published on the primary (where the choice is made) but not on h2: refused there, nothing moves
    with (trees["h1"] / "revisions.log").open("a") as log:
        log.write(f"2020-01-01T00:00:00Z deployed release={UNPUBLISHED} version=v by=me run=r\n")
    elsewhere = project.run("rollback", FLEET, "--to", UNPUBLISHED)

    assert elsewhere.returncode == 1
    assert f"release {UNPUBLISHED} was never published on h2 " in elsewhere.stderr
    assert currents(tmp_path, ("h1", "h2")) == {"h1": A, "h2": A}
    assert not (trees["h1"] / "deploy.lock").exists()


def test_a_deploy_outlives_its_terminal_closing_and_hooks_start_with_the_default_sighup(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = chatty_deploy(project, tmp_path, fail=False)
    project.hook("deploy:updated", "20-wait", "#!/bin/sh\nsleep 1\n")
    # grep's own dispositions, as the hook's exec left them: SIGHUP (bit 0) must not be ignored
    project.hook(
        "deploy:published", "20-sighup", f"#!/bin/sh\ngrep SigIgn /proc/self/status > {tmp_path}/sigign\n"
    )
    master, slave = os.openpty()
    # `setsid -c`: juncture leads a session whose controlling terminal is the pty, so closing the
    # terminal sends it SIGHUP, as closing an operator's terminal window does
    proc = subprocess.Popen(
        ["setsid", "-c", *command(project, "deploy", STAGE)], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    first = b""
    while b"\n" not in first:
        first += os.read(master, 4096)
    os.close(master)

    assert proc.wait(timeout=60) == 0
    assert current(target) is not None
    assert not (target / "deploy.lock").exists()
    assert last_run(project)["status"] == "ok"
    assert int((tmp_path / "sigign").read_text().split()[1], 16) & 1 == 0
