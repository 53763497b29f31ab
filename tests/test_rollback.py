"""`juncture rollback`, the deploy lock, `juncture lock` and `juncture releases`, on a real release tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ProjectDir

STAGE = "production"


def stage_project(project: ProjectDir, tmp_path: Path, extra: str = "") -> Path:
    """A project whose source is `app/` and whose production stage deploys to `tmp_path/target`."""
    target = tmp_path / "target"
    app = project.root / "app"
    app.mkdir(exist_ok=True)
    (app / "index.html").write_text("hello\n")
    project.config(
        f"app: shop\nsource: app\nstages:\n  {STAGE}: {{deploy_to: {target}}}\n" + textwrap.dedent(extra)
    )
    return target


def current(target: Path) -> str | None:
    link = target / "current"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def deploy(project: ProjectDir, target: Path, version: str) -> str:
    """Deploy and return the new release's name."""
    result = project.run("deploy", STAGE, "--version", version)
    assert result.returncode == 0, result.stdout + result.stderr
    name = current(target)
    assert name is not None
    return name


def revision_lines(target: Path) -> list[str]:
    return (target / "revisions.log").read_text().splitlines()


def recorder(log: Path, label: str) -> str:
    """A hook body that appends `label current-release lock-state` to `log`."""
    return f"""\
        #!/bin/sh
        lock=free
        [ -e "$JUNCTURE_DEPLOY_TO/deploy.lock" ] && lock=locked
        echo "{label} $(basename "$(readlink "$JUNCTURE_DEPLOY_TO/current")") $lock" >> {log}
        """


def task_recorder(log: Path, label: str) -> str:
    """The same as a one-line `run:` of a task (YAML flow style, so no ':' + space and no '#')."""
    return (
        f'lock=free; [ -e \\"$JUNCTURE_DEPLOY_TO/deploy.lock\\" ] && lock=locked; '
        f'echo \\"{label} $(basename $(readlink $JUNCTURE_DEPLOY_TO/current)) $lock\\" >> {log}'
    )


def start(project: ProjectDir, out: Path, *args: str) -> subprocess.Popen[str]:
    """Start juncture in the background, its stdout and stderr going to `out`."""
    with out.open("w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "juncture", "-C", str(project.root), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def add_hold_hook(project: ProjectDir, tmp_path: Path) -> None:
    """A deploy:updated hook that, once armed by a `hold` file, keeps the first deploy reaching it
    (and so the lock) until a `go` file appears."""
    project.hook(
        "deploy:updated",
        "10-hold",
        f"""\
        #!/bin/sh
        [ "$JUNCTURE_VERB" = deploy ] && rm {tmp_path}/hold 2>/dev/null || exit 0
        touch {tmp_path}/holding
        while [ ! -e {tmp_path}/go ]; do sleep 0.05; done
        """,
    )


@contextmanager
def holding_lock(project: ProjectDir, tmp_path: Path, version: str) -> Iterator[subprocess.Popen[str]]:
    """A deploy of `version` that holds the lock (inside deploy:updated) until the block ends."""
    (tmp_path / "hold").touch()
    holder = start(project, tmp_path / "holder.out", "deploy", STAGE, "--version", version)
    try:
        wait_until(
            lambda: (tmp_path / "holding").exists() or holder.poll() is not None,
            "the deploy to take the lock",
        )
        assert holder.poll() is None, (tmp_path / "holder.out").read_text()
        yield holder
    finally:
        (tmp_path / "go").touch()
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def write_stale_lock(target: Path) -> dict[str, object]:
    info: dict[str, object] = {
        "run_id": "20200101T000000Z-dead00",
        "verb": "deploy",
        "stage": STAGE,
        "version": "v-ghost",
        "performer": "ghost@gone-host",
        "host": "gone-host",
        "pid": 999999,
        "since": "2020-01-01T00:00:00Z",
    }
    target.mkdir(parents=True, exist_ok=True)
    (target / "deploy.lock").write_text(json.dumps(info))
    return info


# -- rolling back -------------------------------------------------------------------------------------


def test_rollback_repoints_current_to_previous_release_and_logs_a_revision(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    lines_before = revision_lines(target)

    result = project.run("rollback", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(target / "current") == f"releases/{first}"  # relative, as a deploy makes it
    assert (target / "releases" / second).is_dir(), "rollback without --cleanup keeps the newer release"
    new_lines = revision_lines(target)[len(lines_before) :]
    assert len(new_lines) == 1
    assert f" rolled-back release={first} from={second} " in new_lines[0]
    assert not (target / "deploy.lock").exists()


def test_rollback_hooks_run_in_order_and_see_current_repointed_from_deploy_rollback_on(
    project: ProjectDir, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    target = stage_project(
        project,
        tmp_path,
        f"""\
        tasks:
          before_rb: {{run: "{task_recorder(log, "hooks.before")}"}}
          after_rb: {{run: "{task_recorder(log, "hooks.after")}"}}
          on_rb: {{run: "{task_recorder(log, "on-task")}", on: [deploy:rollback]}}
        hooks:
          before: {{deploy:rollback: [before_rb]}}
          after: {{deploy:rollback: [after_rb]}}
        """,
    )
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    assert not log.exists(), "a deploy ran a rollback hook"
    for event in ("pre-connect", "pre-deploy", "pre-app-boot", "post-app-boot", "post-deploy"):
        project.hook(event, None, recorder(log, event))
    project.hook("deploy:rollback", "10-dir", recorder(log, "deploy:rollback/10-dir"))

    result = project.run("rollback", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().splitlines() == [
        f"pre-connect {second} free",
        f"pre-deploy {second} locked",
        f"pre-app-boot {second} locked",
        f"hooks.before {second} locked",
        f"deploy:rollback/10-dir {first} locked",
        f"hooks.after {first} locked",
        f"on-task {first} locked",
        f"post-app-boot {first} locked",
        f"post-deploy {first} free",
    ]


def test_rollback_hooks_get_verb_release_previous_release_and_runtime(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    for event in ("deploy:rollback", "post-deploy"):
        project.hook(event, "10-env", f"#!/bin/sh\nenv | grep ^JUNCTURE_ > {tmp_path}/{event}.env\n")

    assert project.run("rollback", STAGE).returncode == 0

    envs = {}
    for event in ("deploy:rollback", "post-deploy"):
        lines = (tmp_path / f"{event}.env").read_text().splitlines()
        envs[event] = dict(line.split("=", 1) for line in lines)
    for event, env in envs.items():
        assert env["JUNCTURE_VERB"] == "rollback", event
        assert env["JUNCTURE_COMMAND"] == "rollback", event  # Kamal's name for the verb
        assert env["JUNCTURE_RELEASE"] == first, event
        assert env["JUNCTURE_RELEASE_PATH"] == str(target / "releases" / first), event
        assert env["JUNCTURE_PREVIOUS_RELEASE"] == second, event
        assert env["JUNCTURE_VERSION"] == "v1", event  # the version of the release going live
        assert env["JUNCTURE_STAGE"] == STAGE, event
    assert envs["post-deploy"]["JUNCTURE_RUNTIME"].isdigit()


def test_rollback_to_goes_to_the_named_older_release(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    deploy(project, target, "v2")
    third = deploy(project, target, "v3")

    result = project.run("rollback", STAGE, "--to", first)

    assert result.returncode == 0, result.stdout + result.stderr
    assert current(target) == first
    assert f" rolled-back release={first} from={third} " in revision_lines(target)[-1]


def test_rollback_to_unknown_release_exits_2_listing_the_releases(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    lines_before = revision_lines(target)

    result = project.run("rollback", STAGE, "--to", "19990101000000")

    assert result.returncode == 2
    assert "19990101000000" in result.stderr
    assert f"(releases: {first}, {second})" in result.stderr
    assert current(target) == second
    assert revision_lines(target) == lines_before


def test_rollback_to_the_current_release_exits_2(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    deploy(project, target, "v1")
    second = deploy(project, target, "v2")

    result = project.run("rollback", STAGE, "--to", second)

    assert result.returncode == 2
    assert "already current" in result.stderr
    assert current(target) == second


def test_rollback_cleanup_deletes_the_release_rolled_back_from(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")

    result = project.run("rollback", STAGE, "--cleanup")

    assert result.returncode == 0, result.stdout + result.stderr
    assert current(target) == first
    assert sorted(os.listdir(target / "releases")) == [first]
    assert second not in project.run("releases", STAGE).stdout


def test_replace_task_runs_instead_of_the_swap_while_rollback_hooks_still_run(
    project: ProjectDir, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    target = stage_project(
        project,
        tmp_path,
        f"""\
        tasks:
          restore:
            run: echo "replaced previous=$JUNCTURE_PREVIOUS_RELEASE" >> {log}
            replace: deploy:rollback
          before_rb: {{run: "echo hooks.before >> {log}"}}
          after_rb: {{run: "echo hooks.after >> {log}"}}
        hooks:
          before: {{deploy:rollback: [before_rb]}}
          after: {{deploy:rollback: [after_rb]}}
        """,
    )
    deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    project.hook("deploy:rollback", "10-dir", f"#!/bin/sh\necho deploy:rollback/10-dir >> {log}\n")

    result = project.run("rollback", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert current(target) == second, "the swap ran although a task replaces it"
    assert log.read_text().splitlines() == [
        "hooks.before",
        f"replaced previous={second}",
        "deploy:rollback/10-dir",
        "hooks.after",
    ]
    assert not (target / "deploy.lock").exists()


def test_failing_rollback_fires_deploy_failed_and_leaves_current_and_no_lock(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(
        project,
        tmp_path,
        """\
        tasks:
          refuse: {run: "echo refusing; exit 1"}
        hooks:
          before: {deploy:rollback: [refuse]}
        """,
    )
    deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    project.hook(
        "deploy:failed",
        "10-record",
        f"""\
        #!/bin/sh
        {{
          echo "phase=$JUNCTURE_ERROR_PHASE"
          echo "verb=$JUNCTURE_VERB"
          echo "hook=$JUNCTURE_ERROR_HOOK"
          echo "current=$(basename "$(readlink "$JUNCTURE_DEPLOY_TO/current")")"
        }} > {tmp_path}/failed
        """,
    )
    project.hook("deploy:rollback", "10-dir", f"#!/bin/sh\ntouch {tmp_path}/rollback-hook-ran\n")

    result = project.run("rollback", STAGE)

    assert result.returncode == 1
    assert "rollback failed in deploy:rollback" in result.stderr
    assert (tmp_path / "failed").read_text().splitlines() == [
        "phase=deploy:rollback",
        "verb=rollback",
        "hook=task refuse",
        f"current={second}",
    ]
    assert current(target) == second
    assert not (target / "deploy.lock").exists()
    assert not (tmp_path / "rollback-hook-ran").exists()
    assert "rolled-back" not in (target / "revisions.log").read_text()


def test_rollback_with_nothing_to_roll_back_exits_2_and_changes_nothing(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    project.hook("pre-connect", None, f"#!/bin/sh\ntouch {tmp_path}/hook-ran\n")

    never_deployed = project.run("rollback", STAGE)

    assert never_deployed.returncode == 2
    assert "nothing to roll back" in never_deployed.stderr

    only = deploy(project, target, "v1")
    (tmp_path / "hook-ran").unlink()
    single_release = project.run("rollback", STAGE)

    assert single_release.returncode == 2
    assert f"no release before {only}" in single_release.stderr
    assert current(target) == only
    assert not (tmp_path / "hook-ran").exists()
    assert not (target / "deploy.lock").exists()


def test_rollback_from_a_dot_ten_release_of_one_second_goes_to_dot_nine(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    names = ["20200101000000", *(f"20200101000000.{n}" for n in range(1, 11))]
    (target / "releases").mkdir(parents=True)
    with (target / "revisions.log").open("w") as log:
        for name in names:  # as eleven deploys within one second name them
            (target / "releases" / name).mkdir()
            log.write(f"2020-01-01T00:00:00Z deployed release={name} version=v-{name} by=me run=r\n")
    (target / "current").symlink_to(f"releases/{names[-1]}")

    result = project.run("rollback", STAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    assert current(target) == "20200101000000.9"


# -- the lock -----------------------------------------------------------------------------------------


def test_deploy_while_locked_fails_at_once_naming_the_holder(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    add_hold_hook(project, tmp_path)
    with holding_lock(project, tmp_path, "v-holder") as holder:
        lock = json.loads((target / "deploy.lock").read_text())
        assert lock["pid"] == holder.pid and lock["version"] == "v-holder" and lock["verb"] == "deploy"

        began = time.monotonic()
        second = project.run("deploy", STAGE, "--version", "v-second")
        took = time.monotonic() - began

        assert second.returncode == 1
        assert took < 5, f"a locked deploy took {took:.1f} s to fail"
        message = second.stderr
        assert lock["performer"] in message and "@" in lock["performer"]
        assert f"pid {holder.pid}" in message
        assert "version v-holder" in message
        assert f"run {lock['run_id']}" in message
        assert "--lock-wait" in message
        assert holder.poll() is None, "the failed deploy disturbed the running one"
        assert (target / "deploy.lock").exists(), "the failed deploy removed the holder's lock"
    assert holder.returncode == 0
    assert [line.split()[1] for line in revision_lines(target)] == ["deployed"]
    assert not (target / "deploy.lock").exists()


def test_rollback_while_locked_fails_and_leaves_current(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    write_stale_lock(target)

    result = project.run("rollback", STAGE)

    assert result.returncode == 1
    assert "ghost@gone-host" in result.stderr
    assert current(target) == second
    assert (target / "deploy.lock").exists(), "a refused rollback removed someone else's lock"


def test_lock_wait_deploy_waits_for_the_holder_then_succeeds(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    add_hold_hook(project, tmp_path)
    waiter_out = tmp_path / "waiter.out"
    with holding_lock(project, tmp_path, "v-holder"):
        waiter = start(project, waiter_out, "deploy", STAGE, "--version", "v-waiter", "--lock-wait", "30")
        wait_until(
            lambda: "waiting for the deploy lock" in waiter_out.read_text() or waiter.poll() is not None,
            "the second deploy to wait",
        )
        assert waiter.poll() is None, waiter_out.read_text()
        assert "version v-holder" in waiter_out.read_text()
    assert waiter.wait(timeout=30) == 0, waiter_out.read_text()
    assert [line.split()[3] for line in revision_lines(target)] == ["version=v-holder", "version=v-waiter"]
    releases = sorted(os.listdir(target / "releases"))
    assert len(releases) == 2
    assert current(target) == releases[-1]
    assert not (target / "deploy.lock").exists()


def test_lock_wait_gives_up_after_the_wait(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    write_stale_lock(target)

    began = time.monotonic()
    result = project.run("deploy", STAGE, "--lock-wait", "0.5")
    took = time.monotonic() - began

    assert result.returncode == 1
    assert took >= 0.5
    assert "waited 0.5 s" in result.stderr and "ghost@gone-host" in result.stderr
    assert not (target / "releases").exists() or os.listdir(target / "releases") == []


def test_lock_status_shows_a_stale_lock_and_lock_release_frees_the_stage(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    assert project.run("lock", "status", STAGE).stdout == f"stage {STAGE}: unlocked\n"
    info = write_stale_lock(target)

    status = project.run("lock", "status", STAGE)
    refused = project.run("deploy", STAGE)

    assert status.returncode == 1  # locked: a holder on another machine cannot be checked
    assert status.stdout.startswith(
        f"stage {STAGE}: locked, held by ghost@gone-host (pid 999999 on gone-host)"
    )
    assert f"run {info['run_id']}" in status.stdout and "version v-ghost" in status.stdout
    assert refused.returncode == 1
    assert f"juncture lock release --force {STAGE}" in refused.stderr

    released = project.run("lock", "release", "--force", STAGE)

    assert released.returncode == 0
    assert "released the lock held by ghost@gone-host" in released.stdout
    assert not (target / "deploy.lock").exists()
    assert project.run("lock", "status", STAGE).stdout == f"stage {STAGE}: unlocked\n"
    deploy(project, target, "v1")


def test_rollback_queued_behind_a_deploy_rolls_back_that_deploy(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")
    add_hold_hook(project, tmp_path)
    out = tmp_path / "rollback.out"
    with holding_lock(project, tmp_path, "v3"):
        third = max(set(os.listdir(target / "releases")) - {first, second})  # built, not yet live
        rollback = start(project, out, "rollback", STAGE, "--cleanup", "--lock-wait", "30")
        wait_until(
            lambda: "waiting for the deploy lock" in out.read_text() or rollback.poll() is not None,
            "the rollback to wait",
        )
    assert rollback.wait(timeout=30) == 0, out.read_text()
    assert current(target) == second, "the rollback did not go back from the release the deploy made live"
    assert f" rolled-back release={second} from={third} " in revision_lines(target)[-1]
    assert sorted(os.listdir(target / "releases")) == [first, second]  # --cleanup removed the deploy's


def test_deploys_queued_in_the_same_second_both_go_live_in_turn(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    for _attempt in range(5):
        if target.exists():
            subprocess.run(["rm", "-rf", str(target)], check=True)
        write_stale_lock(target)
        time.sleep(1 - time.time() % 1 + 0.02)  # start early in a second
        began = time.time()
        outs = [tmp_path / "a.out", tmp_path / "b.out"]
        procs = [
            start(project, out, "deploy", STAGE, "--version", version, "--lock-wait", "30")
            for out, version in zip(outs, ("va", "vb"), strict=True)
        ]
        try:
            wait_until(
                lambda outs=outs, procs=procs: (
                    all("waiting for the deploy lock" in o.read_text() for o in outs)
                    or any(p.poll() is not None for p in procs)
                ),
                "both deploys to wait for the lock",
            )
            both_named_in_one_second = int(time.time()) == int(began)
        finally:
            (target / "deploy.lock").unlink()
            codes = [p.wait(timeout=30) for p in procs]
        if both_named_in_one_second:
            break
    else:
        pytest.skip("could not start two deploys within one second")

    assert codes == [0, 0], outs[0].read_text() + outs[1].read_text()
    releases = sorted(os.listdir(target / "releases"))
    assert len(releases) == 2
    assert current(target) in releases


# -- listing releases ---------------------------------------------------------------------------------


def test_releases_lists_every_release_and_stars_the_current_one(project: ProjectDir, tmp_path: Path) -> None:
    target = stage_project(project, tmp_path)
    assert project.run("releases", STAGE).stdout == f"no releases in {target / 'releases'}\n"
    first = deploy(project, target, "v1")
    second = deploy(project, target, "v2")

    listed = project.run("releases", STAGE)

    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"  {first}  version v1  deployed ")
    assert lines[1].startswith(f"* {second}  version v2  deployed ")

    assert project.run("rollback", STAGE).returncode == 0
    after = project.run("releases", STAGE).stdout.splitlines()
    assert [line[:2] + line[2:].split()[0] for line in after] == [f"* {first}", f"  {second}"]


def test_a_release_live_after_a_failed_deploy_is_recorded_and_stays_a_rollback_target(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = stage_project(project, tmp_path)
    first = deploy(project, target, "1.0")
    project.hook("deploy:published", "10-smoke", "#!/bin/sh\nexit 1\n")
    failed = project.run("deploy", STAGE, "--version", "2.0")
    assert failed.returncode == 1
    live = current(target)
    assert live is not None and live != first  # failed after the swap: current stays on the complete release
    assert f"deployed release={live} version=2.0" in revision_lines(target)[-1]
    assert revision_lines(target)[-1].endswith("result=failed")

    os.unlink(project.root / ".juncture/hooks/deploy/published.d/10-smoke")
    back = project.run("rollback", STAGE)
    assert back.returncode == 0, back.stderr
    assert current(target) == first
    again = project.run("rollback", STAGE, "--to", live)
    assert again.returncode == 0, again.stderr
    assert current(target) == live
