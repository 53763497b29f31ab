"""`juncture deploy|rollback|releases|lock STAGE` on a stage with SSH hosts: the release tree on every
host, selectors and hook headers in a deploy, rolling batches behind a health gate, failed rollouts with
and without auto-rollback, unreachable hosts, and a server that dies mid-rollout.

Every host is a name for the session's loopback sshd with its own `deploy_to` (`deployed/<host>`), so a
test reads each host's release tree on this machine's disk, and a hook proves where it ran by writing a
file named after `$JUNCTURE_HOST`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_remote import FIVE, STAGE, WEB, WORKERS, closed_port, configure, descendants, finish, host, seen

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import SshServer

SHARED_DB = "production database\n"
# Rollout of FIVE (h3 is the primary): not the hosts' order, and the primary is in the second batch.
ORDER = ["h4", "h1", "h5", "h3", "h2"]
BATCHES = [("h4", "h1"), ("h5", "h3"), ("h2",)]
HOSTS = ("h1", "h2", "h3", "h4", "h5")


# -- helpers -----------------------------------------------------------------------------------------


def deploy_project(
    root: Path,
    server: SshServer,
    hosts: list[dict[str, Any]],
    events: dict[str, Any],
    *,
    shared_file: bool = True,
    tasks: dict[str, Any] | None = None,
    **stage: Any,
) -> ProjectDir:
    """A project in `root/proj` deploying `app/` to `root/deployed/<host>` on `hosts`; with `shared_file`,
    config/db.yml is a shared file, put in place on every host beforehand."""
    project = ProjectDir(root / "proj")
    project.root.mkdir()
    configure(project, server, hosts, events, tasks=tasks, **stage)
    path = project.root / "juncture.yaml"
    body = json.loads(path.read_text())
    body.update(source="app", shared={"dirs": ["log"], "files": ["config/db.yml"] if shared_file else []})
    path.write_text(json.dumps(body, indent=1) + "\n")
    (project.root / "app").mkdir()
    (project.root / "app" / "index.html").write_text("<h1>shop</h1>\n")
    if shared_file:
        for item in hosts:
            config = root / "deployed" / item["name"] / "shared" / "config"
            config.mkdir(parents=True)
            (config / "db.yml").write_text(SHARED_DB)
    return project


def juncture(project: ProjectDir, *args: str) -> subprocess.Popen[str]:
    """juncture in the background, so that independent runs of a fixture overlap."""
    return subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(project: ProjectDir, *args: str) -> subprocess.CompletedProcess[str]:
    return project.run(*args, timeout=60)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def current(root: Path, name: str) -> str | None:
    link = root / "deployed" / name / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def currents(root: Path, names: tuple[str, ...] = HOSTS) -> dict[str, str | None]:
    return {name: current(root, name) for name in names}


def releases(root: Path, name: str) -> list[str]:
    directory = root / "deployed" / name / "releases"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def env_lines(path: Path) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in path.read_text().splitlines())


def env_dump(out: Path, prefix: str, *keys: str) -> str:
    """A hook writing KEY=VALUE lines of `keys` (without the JUNCTURE_ prefix) to out/<prefix>-<host>."""
    lines = "".join(f'echo "{key}=$JUNCTURE_{key}"\n' for key in keys)
    return f"#!/bin/sh\n{{\n{lines}}} > {out}/{prefix}-$JUNCTURE_HOST\n"


# -- one deploy to five hosts with two roles, in three batches ----------------------------------------


@dataclass
class Rolled:
    root: Path
    out: Path
    done: subprocess.CompletedProcess[str]
    release: str


@pytest.fixture(scope="module")
def rolled(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Rolled:
    """FIVE hosts (h3 the primary), rollout two at a time in ORDER, a health command; hooks on hosts at
    deploy:updated, pre-app-boot, post-app-boot and health_check; a worker task and a `once` task."""
    root = tmp_path_factory.mktemp("rolled")
    out = root / "out"
    out.mkdir()
    log = out / "rollout.log"  # appended to in order by the batch's hooks and health probes
    audience = {"audience": "hosts", "timeout": 20}
    project = deploy_project(
        root,
        sshd,
        FIVE,
        {e: audience for e in ("deploy:updated", "pre-app-boot", "post-app-boot", "health_check")},
        tasks={
            "migrate": {
                "run": f"echo migrate >> {out}/task-worker-$JUNCTURE_HOST",
                "roles": ["worker"],
                "on": ["deploy:updated"],
            },
            "seed": {
                "run": f"echo seed >> {out}/task-once-$JUNCTURE_HOST",
                "once": True,
                "on": ["deploy:updated"],
            },
        },
        rollout={"max_concurrent": 2, "order": ORDER},
        health={"command": f"echo probe {{{{ host.name }}}} >> {log}", "retries": 2, "interval": 0.1},
    )
    project.hook(
        "deploy:updated",
        "10-seen",
        env_dump(out, "updated", "HOST", "HOSTS", "DEPLOY_TO", "RELEASE", "RELEASE_PATH", "RUN_ID")
        + 'L="$JUNCTURE_DEPLOY_TO/deploy.lock"\n'
        + f'[ ! -e "$L" ] || cp "$L" {out}/lock-$JUNCTURE_HOST\n',
    )
    project.hook(
        "deploy:updated",
        "20-web",
        f"#!/bin/sh\n# juncture: roles=web\necho web >> {out}/web-$JUNCTURE_HOST\n",
    )
    project.hook("pre-app-boot", "10-log", f'#!/bin/sh\necho "pre $JUNCTURE_HOST" >> {log}\n')
    project.hook(
        "post-app-boot",
        "10-batch",
        f'#!/bin/sh\necho "boot $JUNCTURE_HOST" >> {log}\n'
        + f"readlink $JUNCTURE_CURRENT_PATH > {out}/live-$JUNCTURE_HOST\n"
        + 'echo "$JUNCTURE_HOST $JUNCTURE_BATCH_INDEX $JUNCTURE_BATCH_COUNT $JUNCTURE_BATCH_HOSTS '
        + f'$JUNCTURE_ROLLOUT_ORDER" > {out}/batch-$JUNCTURE_HOST\n',
    )
    project.hook(
        "post-app-boot",
        "20-once",
        f"#!/bin/sh\n# juncture: once\necho $JUNCTURE_BATCH_INDEX >> {out}/header-once-$JUNCTURE_HOST\n",
    )
    project.hook("health_check", "10-log", f'#!/bin/sh\necho "health $JUNCTURE_HOST" >> {log}\n')
    done = run(project, "deploy", STAGE)
    return Rolled(root, out, done, current(root, "h1") or "")


def test_deploy_to_five_hosts_succeeds_and_says_where_the_release_is_live(rolled: Rolled) -> None:
    done = ok(rolled.done)
    assert done.stdout.startswith(f"deploy shop to stage {STAGE} (5 host(s): h1, h2, h3, h4, h5): ")
    assert "{{" not in done.stdout  # no unrendered deploy_to template
    last = done.stdout.splitlines()[-1]
    assert last.startswith(f"deployed {rolled.release} to 5 host(s) ")
    assert f"(current -> releases/{rolled.release} on h1, h2, h3, h4, h5) in " in last


def test_every_host_gets_the_release_current_shared_links_and_a_revision(rolled: Rolled) -> None:
    ok(rolled.done)
    assert rolled.release
    for name in HOSTS:
        deploy_to = rolled.root / "deployed" / name
        release = deploy_to / "releases" / rolled.release
        assert releases(rolled.root, name) == [rolled.release]
        assert os.readlink(deploy_to / "current") == f"releases/{rolled.release}"
        assert (deploy_to / "current" / "index.html").read_text() == "<h1>shop</h1>\n"
        assert os.readlink(release / "log") == "../../shared/log"
        assert os.readlink(release / "config" / "db.yml") == "../../../shared/config/db.yml"
        assert (release / "config" / "db.yml").read_text() == SHARED_DB
        lines = (deploy_to / "revisions.log").read_text().splitlines()
        assert len(lines) == 1 and f" deployed release={rolled.release} " in lines[0]


def test_directory_hooks_of_a_deploy_event_run_on_every_host_with_its_own_paths(rolled: Rolled) -> None:
    ok(rolled.done)
    updated = {name: env_lines(rolled.out / f"updated-{name}") for name in HOSTS}
    for name, env in updated.items():
        deploy_to = str(rolled.root / "deployed" / name)
        assert env["HOST"] == name
        assert env["HOSTS"] == "h1,h2,h3,h4,h5"
        assert env["DEPLOY_TO"] == deploy_to
        assert env["RELEASE"] == rolled.release
        assert env["RELEASE_PATH"] == f"{deploy_to}/releases/{rolled.release}"
    assert len({env["RUN_ID"] for env in updated.values()}) == 1


def test_hook_header_roles_runs_a_deploy_hook_only_on_hosts_with_that_role(rolled: Rolled) -> None:
    ok(rolled.done)
    assert seen(rolled.out, "web") == dict.fromkeys(WEB, "web\n")


def test_task_with_roles_runs_only_on_worker_hosts(rolled: Rolled) -> None:
    ok(rolled.done)
    assert seen(rolled.out, "task-worker") == dict.fromkeys(WORKERS, "migrate\n")


def test_once_task_runs_exactly_once_on_the_primary_host(rolled: Rolled) -> None:
    ok(rolled.done)
    assert seen(rolled.out, "task-once") == {"h3": "seed\n"}


def test_deploy_lock_is_taken_on_the_primary_host_only_and_released_at_the_end(rolled: Rolled) -> None:
    ok(rolled.done)
    assert seen(rolled.out, "lock").keys() == {"h3"}  # while deploy:updated ran
    holder = json.loads((rolled.out / "lock-h3").read_text())
    assert holder["verb"] == "deploy" and holder["stage"] == STAGE
    assert holder["run_id"] == env_lines(rolled.out / "updated-h3")["RUN_ID"]
    assert not list((rolled.root / "deployed").glob("*/deploy.lock"))


def test_rollout_goes_in_batches_of_max_concurrent_in_the_configured_order(rolled: Rolled) -> None:
    done = ok(rolled.done)
    notes = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("batch ")]
    assert notes == ["batch 1/3: h4, h1", "batch 2/3: h5, h3", "batch 3/3: h2"]


def test_each_host_sees_its_own_batch_in_the_hook_environment(rolled: Rolled) -> None:
    ok(rolled.done)
    order = ",".join(ORDER)
    expected = {
        name: f"{name} {index} 3 {','.join(batch)} {order}\n"
        for index, batch in enumerate(BATCHES, 1)
        for name in batch
    }
    assert seen(rolled.out, "batch") == expected
    # post-app-boot ran with `current` already on the new release
    assert seen(rolled.out, "live") == dict.fromkeys(HOSTS, f"releases/{rolled.release}\n")


def test_batches_run_one_after_another_each_behind_its_health_gate(rolled: Rolled) -> None:
    """Per batch, in this order: pre-app-boot hooks, post-app-boot hooks, the health command, the
    health_check hooks; the next batch's first hook starts only after the gate passed."""
    ok(rolled.done)
    lines = [line.split() for line in (rolled.out / "rollout.log").read_text().splitlines()]
    steps = ("pre", "boot", "probe", "health")
    expected_kinds = [kind for batch in BATCHES for kind in steps for _ in batch]
    assert [kind for kind, _ in lines] == expected_kinds
    position = 0
    for batch in BATCHES:
        for _kind in steps:
            group = lines[position : position + len(batch)]
            assert sorted(name for _, name in group) == sorted(batch), (batch, group)
            position += len(batch)


def test_health_check_hooks_run_only_in_the_gate_not_again_after_the_rollout(rolled: Rolled) -> None:
    ok(rolled.done)
    health = [
        line for line in (rolled.out / "rollout.log").read_text().splitlines() if line.startswith("health")
    ]
    assert sorted(health) == sorted(f"health {name}" for name in HOSTS)


def test_header_once_runs_once_per_deploy_in_the_batch_of_the_primary(rolled: Rolled) -> None:
    ok(rolled.done)
    assert seen(rolled.out, "header-once") == {"h3": "2\n"}


# -- a failing health gate in the second batch, with and without auto_rollback --------------------------


@dataclass
class Failed:
    root: Path
    out: Path
    first: str  # the release of the deploy before, live everywhere
    done: subprocess.CompletedProcess[str]
    new: str  # the failed deploy's release


@pytest.fixture(scope="module")
def failed_rollouts(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Failed]:
    """Two projects, auto_rollback true and false, deployed once, then again with h5 (batch 2) unhealthy."""
    projects: dict[str, tuple[Path, Path, ProjectDir]] = {}
    for mode in ("auto", "manual"):
        root = tmp_path_factory.mktemp(f"failed-{mode}")
        out = root / "out"
        out.mkdir()
        project = deploy_project(
            root,
            sshd,
            FIVE,
            {e: {"audience": "hosts", "timeout": 20} for e in ("post-app-boot", "deploy:failed")},
            rollout={"max_concurrent": 2, "order": ORDER, "auto_rollback": mode == "auto"},
            health={
                "command": f"test ! -e {out}/unhealthy-{{{{ host.name }}}}",
                "retries": 2,
                "interval": 0.1,
            },
        )
        project.hook(
            "post-app-boot", "10-boot", f"#!/bin/sh\necho $JUNCTURE_RELEASE >> {out}/boot-$JUNCTURE_HOST\n"
        )
        project.hook(
            "deploy:failed",
            "10-tell",
            env_dump(out, "failed", "ERROR", "ERROR_PHASE", "ERROR_HOST", "RELEASE", "PREVIOUS_RELEASE"),
        )
        projects[mode] = (root, out, project)
    firsts = {mode: juncture(project, "deploy", STAGE) for mode, (_, _, project) in projects.items()}
    for proc in firsts.values():
        ok(finish(proc))
    for _root, out, _project in projects.values():
        (out / "unhealthy-h5").touch()
    seconds = {mode: juncture(project, "deploy", STAGE) for mode, (_, _, project) in projects.items()}
    found = {}
    for mode, proc in seconds.items():
        root, out, _ = projects[mode]
        done = finish(proc)
        first = current(root, "h2") or ""
        built = re.search(r"built release (\S+) on 5 host", done.stdout)
        new = built.group(1) if built else ""
        found[mode] = Failed(root, out, first, done, new)
    return found


def test_failed_health_gate_fails_the_deploy_naming_the_host(failed_rollouts: dict[str, Failed]) -> None:
    for run_ in failed_rollouts.values():
        done = run_.done
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.startswith(
            "juncture: deploy failed in deploy:publishing: health gate failed after 2 tries: "
            "h5: command exited with 1 ("
        ), done.stderr
        assert "Traceback" not in done.stderr


def test_failed_batch_stops_the_rollout_before_the_next_batch(failed_rollouts: dict[str, Failed]) -> None:
    for run_ in failed_rollouts.values():
        assert "batch 3/3" not in run_.done.stdout
        # h2 (batch 3) never switched and never ran the new release's post-app-boot hooks
        assert current(run_.root, "h2") == run_.first
        assert (run_.out / "boot-h2").read_text() == f"{run_.first}\n"
        assert (run_.out / "boot-h4").read_text() == f"{run_.first}\n{run_.new}\n"


def test_auto_rollback_puts_the_switched_hosts_back_on_their_previous_release(
    failed_rollouts: dict[str, Failed],
) -> None:
    run_ = failed_rollouts["auto"]
    assert run_.new and run_.new != run_.first
    assert currents(run_.root) == dict.fromkeys(HOSTS, run_.first)
    assert "auto-rollback: h1, h3, h4, h5 back on their previous release" in run_.done.stdout
    assert run_.done.stderr.rstrip().endswith(f"(current -> releases/{run_.first} on h1, h2, h3, h4, h5)")


def test_auto_rollback_removes_the_new_release_from_every_host(failed_rollouts: dict[str, Failed]) -> None:
    run_ = failed_rollouts["auto"]
    for name in HOSTS:
        assert releases(run_.root, name) == [run_.first], name


def test_without_auto_rollback_the_report_says_which_hosts_run_which_release(
    failed_rollouts: dict[str, Failed],
) -> None:
    run_ = failed_rollouts["manual"]
    new, first = run_.new, run_.first
    assert currents(run_.root) == {"h1": new, "h2": first, "h3": new, "h4": new, "h5": new}
    assert f"hosts on release {new}: h1, h3, h4, h5; still on their previous release: h2" in run_.done.stdout
    assert run_.done.stderr.rstrip().endswith(
        f"(current -> releases/{new} on h1, h3, h4, h5; releases/{first} on h2)"
    )


def test_without_auto_rollback_the_new_release_is_removed_only_where_it_never_went_live(
    failed_rollouts: dict[str, Failed],
) -> None:
    run_ = failed_rollouts["manual"]
    assert releases(run_.root, "h2") == [run_.first]
    for name in ("h1", "h3", "h4", "h5"):
        assert releases(run_.root, name) == sorted([run_.first, run_.new]), name


def test_without_auto_rollback_hosts_left_on_the_new_release_record_it_as_a_failed_deploy(
    failed_rollouts: dict[str, Failed],
) -> None:
    # recorded, the release stays a rollback target there; h2 never went live on it
    run_ = failed_rollouts["manual"]
    for name in ("h1", "h3", "h4", "h5"):
        last = (run_.root / "deployed" / name / "revisions.log").read_text().splitlines()[-1]
        assert f" deployed release={run_.new} " in last and last.endswith(" result=failed"), name
    assert run_.new not in (run_.root / "deployed" / "h2" / "revisions.log").read_text()


def test_deploy_failed_hooks_run_on_every_host_with_the_failing_host(
    failed_rollouts: dict[str, Failed],
) -> None:
    for run_ in failed_rollouts.values():
        told = {name: env_lines(run_.out / f"failed-{name}") for name in HOSTS}
        for env in told.values():
            assert env["ERROR_HOST"] == "h5"
            assert env["ERROR_PHASE"] == "deploy:publishing"
            assert env["ERROR"].startswith("health gate failed after 2 tries: h5: ")
            assert env["RELEASE"] == run_.new
            assert env["PREVIOUS_RELEASE"] == run_.first


def test_failed_rollout_releases_the_lock(failed_rollouts: dict[str, Failed]) -> None:
    for run_ in failed_rollouts.values():
        assert "lock released" in run_.done.stdout
        assert not list((run_.root / "deployed").glob("*/deploy.lock"))


# -- rollback, releases ---------------------------------------------------------------------------------


@dataclass
class RolledBack:
    root: Path
    deployed: list[str]  # the three releases, oldest first
    back: subprocess.CompletedProcess[str]
    after_back: dict[str, str | None]
    to: subprocess.CompletedProcess[str]
    after_to: dict[str, str | None]
    listing: subprocess.CompletedProcess[str]
    rolled_env: dict[str, dict[str, str]]


THREE = [host("h1", "web"), host("h2", "web", primary=True), host("h3", "worker")]


@pytest.fixture(scope="module")
def rolled_back(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> RolledBack:
    """Three deploys to three hosts, `rollback`, then `rollback --to` the first release, then `releases`."""
    root = tmp_path_factory.mktemp("rollback")
    out = root / "out"
    out.mkdir()
    project = deploy_project(root, sshd, THREE, {"deploy:rollback": {"audience": "hosts", "timeout": 20}})
    project.hook(
        "deploy:rollback",
        "10-tell",
        env_dump(out, "rolled", "VERB", "RELEASE", "PREVIOUS_RELEASE", "VERSION"),
    )
    deployed = []
    for _ in range(3):
        ok(run(project, "deploy", STAGE))
        deployed.append(current(root, "h1") or "")
    names = ("h1", "h2", "h3")
    back = run(project, "rollback", STAGE)
    after_back = currents(root, names)
    rolled_env = {name: env_lines(out / f"rolled-{name}") for name in names}
    to = run(project, "rollback", STAGE, "--to", deployed[0])
    after_to = currents(root, names)
    listing = run(project, "releases", STAGE)
    return RolledBack(root, deployed, back, after_back, to, after_to, listing, rolled_env)


def test_rollback_puts_every_host_back_on_the_previous_release(rolled_back: RolledBack) -> None:
    first, second, third = rolled_back.deployed
    assert len({first, second, third}) == 3
    ok(rolled_back.back)
    assert rolled_back.after_back == dict.fromkeys(("h1", "h2", "h3"), second)
    assert rolled_back.back.stdout.splitlines()[-1].startswith(
        f"rolled back to releases/{second} on 3 host(s) in "
    )
    for name in ("h1", "h2", "h3"):
        lines = (rolled_back.root / "deployed" / name / "revisions.log").read_text().splitlines()
        assert f" rolled-back release={second} from={third} " in lines[3]


def test_rollback_hooks_on_hosts_get_the_release_and_the_one_rolled_back_from(
    rolled_back: RolledBack,
) -> None:
    _, second, third = rolled_back.deployed
    for env in rolled_back.rolled_env.values():
        assert env["VERB"] == "rollback"
        assert env["RELEASE"] == second
        assert env["PREVIOUS_RELEASE"] == third
        assert env["VERSION"] == second  # the version that release was deployed with (outside git)


def test_rollback_to_goes_to_the_named_release_on_every_host(rolled_back: RolledBack) -> None:
    ok(rolled_back.to)
    assert rolled_back.after_to == dict.fromkeys(("h1", "h2", "h3"), rolled_back.deployed[0])


def test_releases_lists_each_hosts_releases_and_stars_the_current_one(rolled_back: RolledBack) -> None:
    done = ok(rolled_back.listing)
    first, second, third = rolled_back.deployed
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("[")] == [
        f"[{name}] {rolled_back.root / 'deployed' / name}" for name in ("h1", "h2", "h3")
    ]
    for index in range(3):
        block = lines[index * 4 + 1 : index * 4 + 4]
        assert [line.split()[:2] for line in block] == [["*", first], [second, "version"], [third, "version"]]
        assert block[0].startswith(f"  * {first}  version {first[:12]}  deployed ")
    assert "{{" not in done.stdout


def test_rollback_to_an_unknown_release_fails_and_changes_nothing(sshd: SshServer, tmp_path: Path) -> None:
    project = deploy_project(tmp_path, sshd, [host("h1"), host("h2")], {})
    ok(run(project, "deploy", STAGE))
    live = currents(tmp_path, ("h1", "h2"))
    done = run(project, "rollback", STAGE, "--to", "20200101000000")
    assert done.returncode == 1
    assert "no release '20200101000000'" in done.stderr
    assert currents(tmp_path, ("h1", "h2")) == live
    assert not list((tmp_path / "deployed").glob("*/deploy.lock"))


def test_rollback_replaced_by_a_task_runs_it_on_the_hosts_instead_of_swapping(
    sshd: SshServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tasks = {
        "restore": {
            "run": f'echo "$JUNCTURE_HOST $JUNCTURE_PHASE" > {out}/restore-$JUNCTURE_HOST',
            "replace": "deploy:rollback",
        }
    }
    project = deploy_project(tmp_path, sshd, [host("h1"), host("h2")], {}, tasks=tasks)
    ok(run(project, "deploy", STAGE))
    ok(run(project, "deploy", STAGE))
    live = currents(tmp_path, ("h1", "h2"))
    done = ok(run(project, "rollback", STAGE))
    assert currents(tmp_path, ("h1", "h2")) == live  # the task replaced the swap
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "restore-h1": "h1 deploy:rollback\n",
        "restore-h2": "h2 deploy:rollback\n",
    }
    assert "replaced by task restore" in done.stdout


# -- the deploy lock on the primary host ----------------------------------------------------------------


def test_lock_status_and_release_work_on_the_primary_host(sshd: SshServer, tmp_path: Path) -> None:
    """A stale lock left on the primary (h2): status shows it, a deploy fails naming it, release frees it."""
    project = deploy_project(tmp_path, sshd, [host("h1"), host("h2", primary=True)], {})
    (tmp_path / "deployed" / "h2" / "deploy.lock").write_text(
        json.dumps(
            {
                "run_id": "20260101T000000Z-dead00",
                "verb": "deploy",
                "stage": STAGE,
                "version": "v9",
                "performer": "ghost@elsewhere",
                "host": "elsewhere",
                "pid": 4242,
                "since": "2026-01-01T00:00:00Z",
            }
        )
    )
    status = run(project, "lock", "status", STAGE)
    assert status.returncode == 1  # locked (held from another machine: cannot be checked)
    assert status.stdout.startswith(
        f"[h2] stage {STAGE}: locked, held by ghost@elsewhere (pid 4242 on elsewhere)"
    )
    blocked = run(project, "deploy", STAGE)
    assert blocked.returncode == 1
    assert f"stage {STAGE} is locked on h2: held by ghost@elsewhere" in blocked.stderr
    assert currents(tmp_path, ("h1", "h2")) == {"h1": None, "h2": None}
    assert (tmp_path / "deployed" / "h2" / "deploy.lock").exists()  # not this run's lock: left alone
    assert run(project, "lock", "release", STAGE).returncode == 1  # not without --force
    released = ok(run(project, "lock", "release", "--force", STAGE))
    assert released.stdout.startswith(f"[h2] stage {STAGE}: released the lock held by ghost@elsewhere")
    assert not (tmp_path / "deployed" / "h2" / "deploy.lock").exists()
    assert ok(run(project, "lock", "status", STAGE)).stdout == f"[h2] stage {STAGE}: unlocked\n"


# -- dry run --------------------------------------------------------------------------------------------


def test_dry_run_lists_steps_hooks_and_their_hosts_without_connecting(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The hosts listen nowhere (a closed port): a dry run that connected would fail."""
    port = closed_port()
    hosts = [{**item, "port": port} for item in FIVE]
    events = {e: {"audience": "hosts"} for e in ("deploy:updated", "post-app-boot", "deploy:failed")}
    project = deploy_project(
        tmp_path,
        sshd,
        hosts,
        events,
        shared_file=False,
        tasks={"migrate": {"run": f"touch {tmp_path}/ran", "roles": ["worker"], "on": ["deploy:updated"]}},
        rollout={"max_concurrent": 2, "order": ORDER},
        health={"command": "true", "retries": 3, "interval": 0.5},
    )
    marker = tmp_path / "ran"
    project.hook("deploy:updated", "10-all", f"#!/bin/sh\ntouch {marker}\n")
    project.hook("post-app-boot", "10-once", f"#!/bin/sh\n# juncture: once\ntouch {marker}\n")
    project.hook("deploy:failed", "10-tell", f"#!/bin/sh\ntouch {marker}\n")
    done = ok(run(project, "deploy", STAGE, "--dry-run"))
    assert not (tmp_path / "deployed").exists()
    assert not marker.exists()
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "deploy:starting  [take the deploy lock on h3]" in lines
    updated = lines.index("deploy:updated")
    assert (
        lines[updated + 1]
        == "deploy:updated/10-all  .juncture/hooks/deploy/updated.d/10-all  on h1, h2, h3, h4, h5"
    )
    assert lines[updated + 2].startswith("task migrate  juncture.yaml:")
    assert lines[updated + 2].endswith("  on h2, h3, h5")
    assert "rollout in 3 batch(es): h4, h1 | h5, h3 | h2" in lines
    assert "deploy:publishing  [swap `current` to the release]  (each batch)" in lines
    boot = lines.index("post-app-boot  (each batch)")
    assert lines[boot + 1] == "post-app-boot/10-once  .juncture/hooks/post-app-boot.d/10-once  on h3"
    assert "health_check  (each batch), in the health gate: command 'true', 3 tries 0.5 s apart" in lines
    failed = lines.index("on failure: deploy:failed")
    assert lines[failed + 1].endswith("  on h1, h2, h3, h4, h5")
    assert "{{" not in done.stdout


# -- unreachable hosts: skip and abort side by side ------------------------------------------------------


@dataclass
class Unreached:
    root: Path
    out: Path
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def unreached(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Unreached]:
    """h1 (primary), `down` (a port nobody listens on) and h3, deployed with on_unreachable skip and abort."""
    procs = {}
    found = {}
    for mode in ("skip", "abort"):
        root = tmp_path_factory.mktemp(f"unreached-{mode}")
        out = root / "out"
        out.mkdir()
        project = deploy_project(
            root,
            sshd,
            [host("h1", primary=True), host("down", port=closed_port()), host("h3")],
            {e: {"audience": ["local", "hosts"], "timeout": 20} for e in ("deploy:updated", "deploy:failed")},
            shared_file=False,
            on_unreachable=mode,
        )
        project.hook("deploy:updated", "10-seen", f"#!/bin/sh\ntouch {out}/updated-$JUNCTURE_HOST\n")
        project.hook("deploy:failed", "10-tell", env_dump(out, "failed", "ERROR_HOST", "ERROR"))
        procs[mode] = juncture(project, "deploy", STAGE)
        found[mode] = (root, out)
    return {mode: Unreached(*found[mode], finish(proc, timeout=60)) for mode, proc in procs.items()}


def test_on_unreachable_skip_deploys_to_the_others_and_reports_the_skipped_host(
    unreached: dict[str, Unreached],
) -> None:
    run_ = unreached["skip"]
    done = run_.done
    assert done.returncode == 3, done.stdout + done.stderr  # deployed where reachable, one host skipped
    release = current(run_.root, "h1")
    assert release is not None
    assert currents(run_.root, ("h1", "h3")) == {"h1": release, "h3": release}
    assert not (run_.root / "deployed" / "down").exists()
    assert sorted(p.name for p in run_.out.glob("updated-*")) == [
        "updated-h1",
        "updated-h3",
        "updated-localhost",
    ]
    assert "lock taken on h1; unreachable, skipped: down" in done.stdout
    assert done.stdout.splitlines()[-1].startswith(
        f"deployed {release} to 2 host(s) "
        f"(current -> releases/{release} on h1, h3; unreachable, skipped: down) in "
    )


def test_on_unreachable_abort_fails_before_anything_is_switched_anywhere(
    unreached: dict[str, Unreached],
) -> None:
    run_ = unreached["abort"]
    done = run_.done
    assert done.returncode == 1
    assert done.stderr.startswith("juncture: deploy failed in deploy:starting: unreachable: down ")
    assert done.stderr.rstrip().endswith("(no host was changed)")
    assert not (run_.root / "deployed").exists()  # no lock, no release, no tree: on no host
    assert not list(run_.out.glob("updated-*"))
    # the lock was never taken: no deploy:failed hooks, anywhere
    assert not list(run_.out.glob("failed-*"))
    assert "not connected" not in done.stdout


# -- the server dies mid-rollout ---------------------------------------------------------------------------


@dataclass
class Killed:
    root: Path
    done: subprocess.CompletedProcess[str]
    seconds: float  # from the kill to juncture's exit
    finished: bool  # the slow hook's last line ran after all


@pytest.fixture(scope="module")
def killed_mid_rollout(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    """A private sshd serving h1 (primary) and h2, one host per batch; killed, listener and every process
    serving the connections, while batch 1's post-app-boot hook sleeps."""
    import servers

    root = tmp_path_factory.mktemp("killed")
    server = servers.start_sshd(str(root / "sshd"))
    try:
        started, finished = root / "started", root / "finished"
        project = deploy_project(
            root,
            server,
            [host("h1", primary=True), host("h2")],
            {"post-app-boot": {"audience": "hosts", "timeout": 60, "grace": 1}},
            rollout={"max_concurrent": 1},
        )
        project.hook(
            "post-app-boot",
            "10-slow",
            f'#!/bin/sh\n[ "$JUNCTURE_BATCH_INDEX" = 1 ] || exit 0\n'
            f"touch {started}\nsleep 30\ntouch {finished}\n",
        )
        proc = juncture(project, "deploy", STAGE)
        try:
            deadline = time.monotonic() + 20
            while not started.exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the slow hook never started"
                time.sleep(0.02)
            time.sleep(0.5)
            killed_at = time.monotonic()
            for pid in [server.pid, *descendants(server.pid)]:  # listener, sessions, the hook and its sleep
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            done = finish(proc, timeout=30)
            seconds = time.monotonic() - killed_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        yield Killed(root, done, seconds, finished.exists())
    finally:
        for pid in descendants(server.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stop()


def test_sshd_killed_mid_rollout_fails_the_deploy_quickly_naming_the_host(killed_mid_rollout: Killed) -> None:
    done = killed_mid_rollout.done
    assert done.returncode == 1
    assert killed_mid_rollout.seconds < 15
    assert not killed_mid_rollout.finished
    assert done.stderr.startswith(
        "juncture: deploy failed in deploy:publishing: [h1] event post-app-boot aborted: "
    )
    assert "connection to h1 lost" in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_sshd_killed_mid_rollout_reports_the_lock_it_could_not_release(killed_mid_rollout: Killed) -> None:
    """The primary is gone: the lock stays there, and the report says so instead of "lock released"."""
    done = killed_mid_rollout.done
    assert "could not release the lock: h1: releasing the deploy lock: connection to h1 lost" in done.stdout
    assert f"`juncture lock release {STAGE}` frees it" in done.stdout
    assert "lock released" not in done.stdout
    assert (killed_mid_rollout.root / "deployed" / "h1" / "deploy.lock").exists()
    # h2, in the batch that never came, is still without a current release
    assert current(killed_mid_rollout.root, "h2") is None
