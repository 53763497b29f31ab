"""`juncture deploy STAGE` end to end: the release tree, the phase order, failures and their cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import ProjectDir, alive

# Every event a deploy fires, in order, with the phase it belongs to (what <PREFIX>PHASE says).
DEPLOY_ORDER: tuple[tuple[str, str], ...] = (
    ("pre-connect", "deploy:starting"),
    ("deploy:starting", "deploy:starting"),
    ("deploy:check", "deploy:check"),
    ("deploy:init", "deploy:init"),
    ("deploy:started", "deploy:started"),
    ("pre-build", "deploy:updating"),
    ("pre_deploy", "deploy:updating"),
    ("deploy:updating", "deploy:updating"),
    ("post_build", "deploy:updating"),
    ("deploy:symlink", "deploy:symlink"),
    ("deploy:updated", "deploy:updated"),
    ("pre-deploy", "deploy:publishing"),
    ("pre-app-boot", "deploy:publishing"),
    ("deploy:publishing", "deploy:publishing"),
    ("post-app-boot", "deploy:publishing"),
    ("after_allocation_started", "deploy:publishing"),
    ("health_check", "deploy:publishing"),
    ("deploy:published", "deploy:published"),
    ("post_deploy", "deploy:published"),
    ("deploy:finishing", "deploy:finishing"),
    ("deploy:finished", "deploy:finished"),
    ("post-deploy", "deploy:finished"),
)
# The directory hooks of deploy:publishing run after `current` was swapped: from there on, the new
# release is live and stays live when a later hook fails.
FIRST_PUBLISHED = DEPLOY_ORDER.index(("deploy:publishing", "deploy:publishing"))

APP_FILES = {
    "index.html": "<h1>shop</h1>\n",
    "css/site.css": "body { color: red }\n",
    "config/app.yml": "name: shop\n",
    "config/db.yml": "development database, replaced by the shared one\n",
    "log/old.log": "a log the shared log dir replaces\n",
}
SHARED_DB = "production database\n"

FAILED_KEYS = (
    "ERROR",
    "ERROR_PHASE",
    "ERROR_HOOK",
    "ERROR_HOST",
    "ERROR_EXIT_CODE",
    "PHASE",
    "RELEASE",
    "RUNTIME",
)


# -- helpers ----------------------------------------------------------------------------------------


def _write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _site(
    project: ProjectDir,
    tmp_path: Path,
    extra: str = "",
    *,
    source: str = "app",
    keep: int = 3,
    deploy_to: Path | None = None,
) -> Path:
    """An app in `app/`, a target with its shared file in place, and juncture.yaml; returns deploy_to."""
    _write_files(project.root / "app", APP_FILES)
    target = deploy_to if deploy_to is not None else tmp_path / "target"
    if deploy_to is None:
        _write_files(target / "shared", {"config/db.yml": SHARED_DB})
    project.config(
        "app: shop\n"
        f"source: {source}\n"
        "shared: {dirs: [log], files: [config/db.yml]}\n"
        f"keep_releases: {keep}\n"
        "stages:\n"
        "  production:\n"
        f"    deploy_to: {target}\n"
        "    variables: {greeting: hi}\n" + textwrap.dedent(extra)
    )
    return target


def _deploy(project: ProjectDir, *args: str) -> subprocess.CompletedProcess[str]:
    return project.run("deploy", "production", *args)


def _deployed(project: ProjectDir, *args: str) -> subprocess.CompletedProcess[str]:
    result = _deploy(project, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _current(target: Path) -> str | None:
    link = target / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def _releases(target: Path) -> list[str]:
    directory = target / "releases"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its content, a symlink as `-> TARGET` (not followed); no directories."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                found[rel] = path.read_text()
    return found


def _recorder(log: Path, label: str = "$JUNCTURE_EVENT $JUNCTURE_PHASE") -> str:
    return f'#!/bin/sh\necho "{label}" >> {log}\n'


def _failure_recorder(out: Path) -> str:
    """A deploy:failed hook that writes KEY=VALUE lines of what it was told."""
    values = " ".join(f'"${{JUNCTURE_{key}}}"' for key in FAILED_KEYS)
    formats = "".join(f"{key}=%s\\n" for key in FAILED_KEYS)
    return f"#!/bin/sh\nprintf '{formats}' {values} >> {out}\n"


def _read_failure(out: Path) -> dict[str, str]:
    assert out.exists(), "the deploy:failed hook did not run"
    return dict(line.partition("=")[::2] for line in out.read_text().splitlines())


def _env_dump(directory: Path) -> str:
    """A hook that saves its JUNCTURE_ variables to `directory/<event>`."""
    return f'#!/bin/sh\nenv | grep "^JUNCTURE_" > "{directory}/$JUNCTURE_EVENT"\n'


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in path.read_text().splitlines())


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"juncture exited ({proc.returncode}) before {path} appeared:\n{out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def _popen_deploy(project: ProjectDir, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "deploy", "production", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill a deploy a failed assertion left running."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _assert_no_unpublished_release(target: Path, published: list[str]) -> None:
    assert _releases(target) == sorted(published)
    assert not [name for name in _releases(target) if name.endswith(".partial")]


# -- a successful deploy ----------------------------------------------------------------------------


def test_first_deploy_copies_source_links_shared_paths_and_points_current_at_the_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    result = _deployed(project, "--version", "1.4.2")

    [release] = _releases(target)
    release_dir = target / "releases" / release
    assert os.readlink(target / "current") == f"releases/{release}"  # relative, so deploy_to can move
    assert str(release_dir) in result.stdout
    assert _tree(release_dir) == {
        "index.html": APP_FILES["index.html"],
        "css/site.css": APP_FILES["css/site.css"],
        "config/app.yml": APP_FILES["config/app.yml"],
        "config/db.yml": "-> ../../../shared/config/db.yml",  # relative, like current
        "log": "-> ../../shared/log",
    }
    assert (target / "current" / "config" / "db.yml").read_text() == SHARED_DB
    assert (target / "shared" / "log").is_dir()
    assert not (target / "deploy.lock").exists()

    [line] = (target / "revisions.log").read_text().splitlines()
    at, action, *fields = line.split(" ")
    words = dict(field.partition("=")[::2] for field in fields)
    assert action == "deployed"
    assert time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")
    assert words["release"] == release
    assert words["version"] == "1.4.2"
    assert words["by"] and words["run"]


def test_release_is_named_by_its_utc_start_time(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    before = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    _deployed(project)
    after = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    [release] = _releases(target)
    assert before <= release <= after


def test_second_deploy_moves_current_and_keeps_the_first_release(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    first = _current(target)
    (project.root / "app" / "index.html").write_text("<h1>v2</h1>\n")
    _deployed(project)
    second = _current(target)
    assert first is not None and second is not None
    assert first < second
    assert _releases(target) == [first, second]
    assert (target / "current" / "index.html").read_text() == "<h1>v2</h1>\n"
    assert (target / "releases" / first / "index.html").read_text() == APP_FILES["index.html"]
    assert [line.split()[2] for line in (target / "revisions.log").read_text().splitlines()] == [
        f"release={first}",
        f"release={second}",
    ]


def test_release_keeps_modes_times_symlinks_and_empty_directories_of_the_source(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    app = project.root / "app"
    _write_files(app, {"bin/start": "#!/bin/sh\necho started\n", "secret.key": "k\n"})
    (app / "bin" / "start").chmod(0o750)
    (app / "secret.key").chmod(0o600)
    os.utime(app / "index.html", (1_000_000_000, 1_000_000_000))
    (app / "latest.html").symlink_to("index.html")
    (app / "uploads").mkdir()

    _deployed(project)

    release = target / "releases" / str(_current(target))
    assert (release / "bin" / "start").stat().st_mode & 0o7777 == 0o750
    assert (release / "secret.key").stat().st_mode & 0o7777 == 0o600
    assert (release / "index.html").stat().st_mtime == 1_000_000_000
    assert os.readlink(release / "latest.html") == "index.html"
    assert (release / "uploads").is_dir()
    assert release.stat().st_mode & 0o777 == app.stat().st_mode & 0o777
    done = subprocess.run([str(release / "bin" / "start")], capture_output=True, text=True)
    assert done.stdout == "started\n"


def test_events_fire_in_deploy_order_with_their_phase(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "order"
    probe = 'if [ -d "$JUNCTURE_RELEASE_PATH" ]; then s=built; else s=absent; fi'
    _site(
        project,
        tmp_path,
        f"""\
        phases:
          - {{name: deploy:assets, after: deploy:updated}}
        tasks:
          prepare: {{run: '{probe}; echo "task prepare $s" >> {log}'}}
          verify: {{run: '{probe}; echo "task verify $s" >> {log}'}}
        hooks:
          before: {{deploy:updating: [prepare]}}
          after: {{deploy:updating: [verify]}}
        """,
    )
    for event, _ in DEPLOY_ORDER:
        project.hook(event, "50-record", _recorder(log))
    project.hook("deploy:assets", "50-record", _recorder(log))
    project.hook("deploy:failed", "50-record", _recorder(log))

    _deployed(project)

    expected = [f"{event} {phase}" for event, phase in DEPLOY_ORDER]
    expected.insert(expected.index("deploy:updated deploy:updated") + 1, "deploy:assets deploy:assets")
    # The phase's before tasks come after the events that fire before it, and before its action ...
    expected.insert(expected.index("deploy:updating deploy:updating"), "task prepare absent")
    # ... its directory hooks and after tasks after the action.
    expected.insert(expected.index("deploy:updating deploy:updating") + 1, "task verify built")
    assert log.read_text().splitlines() == expected


def test_hook_environment_describes_the_deploy(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    first = _current(target)
    dumps = tmp_path / "env"
    dumps.mkdir()
    for event in ("pre-connect", "deploy:updated", "deploy:finished", "post-deploy"):
        project.hook(event, "50-env", _env_dump(dumps))

    _deployed(project, "--version", "2.0.0")

    release = _current(target)
    assert release != first
    env = {event: _read_env(dumps / event) for event in os.listdir(dumps)}
    updated = env["deploy:updated"]
    assert {key: updated[f"JUNCTURE_{key}"] for key in ("EVENT", "PHASE", "VERB", "STAGE", "HOST")} == {
        "EVENT": "deploy:updated",
        "PHASE": "deploy:updated",
        "VERB": "deploy",
        "STAGE": "production",
        "HOST": "localhost",
    }
    assert updated["JUNCTURE_DEPLOY_TO"] == str(target)
    assert updated["JUNCTURE_RELEASE"] == release
    assert updated["JUNCTURE_RELEASE_PATH"] == str(target / "releases" / str(release))
    assert updated["JUNCTURE_CURRENT_PATH"] == str(target / "current")
    assert updated["JUNCTURE_PREVIOUS_RELEASE"] == first
    assert updated["JUNCTURE_VERSION"] == "2.0.0"
    run_ids = {values["JUNCTURE_RUN_ID"] for values in env.values()}
    assert len(run_ids) == 1 and run_ids != {""}
    assert f"run={run_ids.pop()}" in (target / "revisions.log").read_text().splitlines()[-1]
    # RUNTIME only where the deploy is over (or failed).
    assert "JUNCTURE_RUNTIME" not in env["pre-connect"]
    assert "JUNCTURE_RUNTIME" not in updated
    assert env["deploy:finished"]["JUNCTURE_RUNTIME"].isdigit()
    assert env["post-deploy"]["JUNCTURE_RUNTIME"].isdigit()


def test_version_defaults_to_the_release_name_outside_git(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    project.hook("deploy:updated", "50-version", f"#!/bin/sh\necho $JUNCTURE_VERSION > {tmp_path}/version\n")
    _deployed(project)
    release = _current(target)
    assert (tmp_path / "version").read_text().strip() == release
    assert f"version={release}" in (target / "revisions.log").read_text()


def test_env_prefix_renames_the_hook_variables(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path, "env_prefix: KAMAL_\n")
    out = tmp_path / "kamal"
    project.hook(
        "pre-deploy",
        "50-kamal",
        f'#!/bin/sh\necho "$KAMAL_EVENT $KAMAL_PHASE $KAMAL_RELEASE [$JUNCTURE_EVENT]" > {out}\n',
    )
    _deployed(project)
    assert out.read_text().split() == ["pre-deploy", "deploy:publishing", str(_current(target)), "[]"]


def test_task_templates_see_deploy_facts_and_stage_variables_and_run_in_the_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    out = tmp_path / "greet"
    target = _site(
        project,
        tmp_path,
        f"""\
        tasks:
          greet:
            run: 'echo "{{{{ greeting }}}} {{{{ stage }}}} {{{{ app }}}} {{{{ phase }}}} $PWD $WHERE" > {out}'
            env: {{WHERE: "{{{{ release_path }}}}|{{{{ version }}}}|{{{{ deploy_to }}}}"}}
            on: [deploy:updated]
          listing:
            run: 'pwd -P > {out}.dir'
            dir: '{{{{ current_path }}}}'
            on: [deploy:finished]
        """,
    )
    _deployed(project, "--version", "3.1")
    release_path = target / "releases" / str(_current(target))
    assert out.read_text().split() == [
        "hi",
        "production",
        "shop",
        "deploy:updated",
        str(release_path),
        f"{release_path}|3.1|{target}",
    ]
    assert Path(f"{out}.dir").read_text().strip() == str(release_path)


def test_lock_file_names_the_running_deploy_and_is_gone_after_it(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    seen = tmp_path / "lock"
    project.hook(
        "deploy:updated",
        "50-lock",
        f'#!/bin/sh\ncat "$JUNCTURE_DEPLOY_TO/deploy.lock" > {seen}\necho "$JUNCTURE_RUN_ID" > {seen}.run\n',
    )
    _deployed(project, "--version", "9.9")
    info = json.loads(seen.read_text())
    assert info["run_id"] == Path(f"{seen}.run").read_text().strip()
    assert (info["verb"], info["stage"], info["version"]) == ("deploy", "production", "9.9")
    assert not (target / "deploy.lock").exists()


def test_deploy_fails_while_another_run_holds_the_lock_and_leaves_that_lock(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    first = _current(target)
    holder = {
        "run_id": "other-run",
        "verb": "deploy",
        "stage": "production",
        "version": "7",
        "performer": "someone@elsewhere",
        "host": "elsewhere",
        "pid": 1,
        "since": "2020-01-01T00:00:00Z",
    }
    (target / "deploy.lock").write_text(json.dumps(holder))
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    assert "juncture: deploy failed in deploy:starting: stage production is locked" in result.stderr
    assert "someone@elsewhere" in result.stderr
    assert not out.exists()  # the deploy never started: no deploy:failed
    assert json.loads((target / "deploy.lock").read_text()) == holder
    assert _current(target) == first
    _assert_no_unpublished_release(target, [str(first)])


def _utc_second() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def _race_for_the_lock(
    project: ProjectDir, tmp_path: Path, target: Path, *, same_second: bool
) -> tuple[subprocess.CompletedProcess[str], list[list[str]], bool]:
    """A deploy holds the lock in deploy:started while a second one, with --lock-wait, starts and
    waits; then the first finishes and the second goes on. Returns the second's result, the
    `RELEASE PREVIOUS_RELEASE` each saw in deploy:started, and whether both started in one second."""
    seen, ready, go = tmp_path / "seen", tmp_path / "ready", tmp_path / "go"
    project.hook(
        "deploy:started",
        "50-gate",
        f"""\
        #!/bin/sh
        echo "$JUNCTURE_RELEASE $JUNCTURE_PREVIOUS_RELEASE" >> {seen}
        touch {ready}
        while [ ! -e {go} ]; do sleep 0.02; done
        """,
    )
    if same_second:
        time.sleep(1.02 - time.time() % 1)  # start just after a second begins
    started = _utc_second()
    holder = _popen_deploy(project)
    try:
        _wait_for(ready, holder)
        if not same_second:
            while _utc_second() <= seen.read_text().split()[0][:14]:
                time.sleep(0.02)
        waiter = _popen_deploy(project, "--lock-wait", "30")
        try:
            # The waiter has named its release and is waiting: its staged lock file exists.
            _wait_for(target / f"deploy.lock.{waiter.pid}.tmp", waiter)
            one_second = _utc_second() == started
            go.touch()
            assert holder.wait(timeout=30) == 0
            out, err = waiter.communicate(timeout=30)
        finally:
            _stop(waiter)
    finally:
        _stop(holder)
    done = subprocess.CompletedProcess(waiter.args, waiter.returncode, out, err)
    return done, [line.split(" ") for line in seen.read_text().splitlines()], one_second


def test_quiet_prints_only_the_final_line(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    project.hook("deploy:updated", "50-noise", "#!/bin/sh\necho noise\n")
    result = _deployed(project, "-q")
    [line] = result.stdout.splitlines()
    assert line.startswith("deployed ")
    assert str(target / "releases" / str(_current(target))) in line


def test_verbose_streams_hook_output_with_the_hook_name(project: ProjectDir, tmp_path: Path) -> None:
    _site(project, tmp_path)
    project.hook("deploy:updated", "50-noise", "#!/bin/sh\necho making noise\n")
    result = _deployed(project, "-v")
    assert "[50-noise] making noise" in result.stdout


def test_final_line_names_the_whole_version_given_with_dash_dash_version(
    project: ProjectDir, tmp_path: Path
) -> None:
    _site(project, tmp_path)
    result = _deployed(project, "--version", "v2.10.0-rc.12")
    assert result.stdout.splitlines()[-1].startswith("deployed v2.10.0-rc.12 to ")


def test_default_source_is_the_project_without_juncture_state_or_deploy_to(
    project: ProjectDir, tmp_path: Path
) -> None:
    _write_files(project.root / "app", {"index.html": "hi\n"})
    config = project.config("app: shop\nstages:\n  production:\n    deploy_to: deploy\n")
    project.hook("deploy:updated", "50-ok", "#!/bin/sh\necho ok\n")
    target = project.root / "deploy"  # relative to the project, and inside the default source
    _deployed(project)
    _deployed(project)
    for release in _releases(target):
        assert _tree(target / "releases" / release) == {
            "juncture.yaml": config.read_text(),
            "app/index.html": "hi\n",
        }


def test_lock_wait_waits_for_the_holder_to_release_the_lock(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    lock = target / "deploy.lock"
    lock.write_text(json.dumps({"run_id": "other", "performer": "someone@elsewhere"}))
    releaser = threading.Timer(0.6, lock.unlink)
    releaser.start()
    try:
        started = time.monotonic()
        result = _deployed(project, "--lock-wait", "20")
    finally:
        releaser.cancel()
    assert time.monotonic() - started >= 0.5
    assert "waiting for the deploy lock" in result.stdout
    assert len(_releases(target)) == 2
    assert _current(target) == _releases(target)[-1]
    assert not lock.exists()


def test_deploy_that_waited_for_the_lock_keeps_the_release_published_meanwhile_as_previous(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path, keep=1)
    _deployed(project)

    waited, seen, _ = _race_for_the_lock(project, tmp_path, target, same_second=False)

    assert waited.returncode == 0, waited.stdout + waited.stderr
    (published_meanwhile, _), (release, previous) = seen
    assert _current(target) == release
    assert previous == published_meanwhile, "PREVIOUS_RELEASE is not the release current pointed at"
    assert _releases(target) == [published_meanwhile, release], "keep_releases: 1 removed the previous"


def test_deploy_that_waited_for_the_lock_in_the_same_second_builds_its_own_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)

    waited, seen, one_second = _race_for_the_lock(project, tmp_path, target, same_second=True)

    if not one_second:
        pytest.skip("the two deploys did not start within one second (slow machine)")
    (first, _), (second, _) = seen
    assert (target / "current").resolve().is_dir(), f"current -> {os.readlink(target / 'current')}, removed"
    assert first != second, "both deploys named their release the same"
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert _releases(target) == [first, second]


# -- keeping releases -------------------------------------------------------------------------------


def test_keep_releases_leaves_the_newest_three_after_five_deploys(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path, keep=3)
    deployed: list[str] = []
    for _ in range(5):
        _deployed(project)
        deployed.append(str(_current(target)))
    assert len(set(deployed)) == 5
    assert deployed == sorted(deployed), "release names do not sort in deploy order"
    assert _releases(target) == deployed[-3:]
    assert _current(target) == deployed[-1]
    assert len((target / "revisions.log").read_text().splitlines()) == 5


def test_keep_releases_one_still_keeps_the_previous_release(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path, keep=1)
    deployed: list[str] = []
    for _ in range(3):
        _deployed(project)
        deployed.append(str(_current(target)))
    assert _releases(target) == deployed[-2:]


def test_pruning_never_removes_the_new_current_or_the_previous_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path, keep=1)
    _deployed(project)
    previous = _current(target)
    # Releases whose names sort after any real one: by name, current and previous are the oldest.
    future = ["29990101000000", "29990101000001"]
    for name in future:
        (target / "releases" / name).mkdir()

    _deployed(project)

    current = _current(target)
    assert _releases(target) == sorted([str(previous), str(current), future[-1]])


def test_deploy_removes_partial_leftovers_of_a_killed_build(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    leftover = target / "releases" / "20200101000000.partial"
    _write_files(leftover, {"index.html": "half\n"})
    _deployed(project)
    assert not leftover.exists()
    assert _releases(target) == [_current(target)]


def test_eleventh_release_within_one_second_is_kept_as_the_newest(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path, keep=3)
    time.sleep(1.02 - time.time() % 1)  # start just after a second begins
    base = _utc_second()
    earlier = [base, *(f"{base}.{n}" for n in range(1, 10))]  # ten releases already made this second
    for name in earlier:
        (target / "releases" / name).mkdir(parents=True)

    _deployed(project)

    release = str(_current(target))
    if not release.startswith(base):
        pytest.skip("the deploy did not start in the same second (slow machine)")
    assert sorted(os.listdir(target / "releases")) == sorted([*earlier[-2:], release])


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "event", "phase"),
    [(i, event, phase) for i, (event, phase) in enumerate(DEPLOY_ORDER)],
    ids=[event for event, _ in DEPLOY_ORDER],
)
def test_failing_hook_in_any_event_fails_the_deploy_and_leaves_current_complete(
    project: ProjectDir, tmp_path: Path, index: int, event: str, phase: str
) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    previous = str(_current(target))
    out = tmp_path / "failed"
    project.hook(event, "50-fail", "#!/bin/sh\necho about to fail\nexit 7\n")
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1, result.stdout + result.stderr
    if event == "pre-connect":  # before the lock: nothing was attempted, so no deploy:failed
        assert not out.exists()
        assert _current(target) == previous
        _assert_no_unpublished_release(target, [previous])
        return
    failure = _read_failure(out)
    assert failure["ERROR_PHASE"] == phase
    assert failure["ERROR_HOOK"] == f"{event}/50-fail"
    assert failure["ERROR_EXIT_CODE"] == "7"
    assert failure["ERROR_HOST"] == "localhost"
    assert failure["PHASE"] == "deploy:failed"
    assert failure["RUNTIME"].isdigit()
    assert "exited with code 7" in failure["ERROR"]
    assert event.replace(":", "/") + ".d/50-fail exited with code 7" in failure["ERROR"]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"juncture: deploy failed in {phase}: event {event} aborted: hook ")
    )
    assert not (target / "deploy.lock").exists()
    new = failure["RELEASE"]
    if index >= FIRST_PUBLISHED:
        assert _current(target) == new
        _assert_no_unpublished_release(target, [previous, new])
    else:
        assert _current(target) == previous
        _assert_no_unpublished_release(target, [previous])
    assert (target / "current" / "index.html").read_text() == APP_FILES["index.html"]


def test_failing_hook_in_a_custom_phase_fails_the_deploy_before_publishing(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path, "phases:\n  - {name: deploy:assets, after: deploy:updated}\n")
    _deployed(project)
    previous = _current(target)
    out = tmp_path / "failed"
    project.hook("deploy:assets", "50-fail", "#!/bin/sh\nexit 4\n")
    project.hook("deploy:failed", "50-record", _failure_recorder(out))
    assert _deploy(project).returncode == 1
    failure = _read_failure(out)
    assert (failure["ERROR_PHASE"], failure["ERROR_HOOK"], failure["ERROR_EXIT_CODE"]) == (
        "deploy:assets",
        "deploy:assets/50-fail",
        "4",
    )
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])


def test_failing_task_is_named_in_error_hook(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path, "tasks:\n  migrate: {run: 'exit 5', on: [deploy:updated]}\n")
    _deployed(project, "--skip-hooks")  # the first release, without the failing task
    previous = _current(target)
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    failure = _read_failure(out)
    assert (failure["ERROR_PHASE"], failure["ERROR_HOOK"], failure["ERROR_EXIT_CODE"]) == (
        "deploy:updated",
        "task migrate",
        "5",
    )
    assert "task migrate (juncture.yaml:" in result.stderr
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])


def test_continue_on_error_task_does_not_fail_the_deploy(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(
        project,
        tmp_path,
        "tasks:\n"
        "  warm: {run: 'exit 5', continue_on_error: true, on: [deploy:updated]}\n"
        f"  later: {{run: 'touch {tmp_path}/after', on: [deploy:updated]}}\n",
    )
    _deployed(project)
    assert (tmp_path / "after").exists()
    assert _current(target) is not None


def _break_source(project: ProjectDir, target: Path) -> None:
    os.rename(project.root / "app", project.root / "app.moved")


def _break_shared_file(project: ProjectDir, target: Path) -> None:
    (target / "shared" / "config" / "db.yml").unlink()


BUILT_IN_FAILURES = {
    "missing-source": (_break_source, "deploy:updating", "source directory"),
    "missing-shared-file": (_break_shared_file, "deploy:check", "shared file missing"),
}


@pytest.mark.parametrize("case", list(BUILT_IN_FAILURES))
def test_built_in_step_failure_runs_failure_hooks_and_keeps_the_previous_release(
    project: ProjectDir, tmp_path: Path, case: str
) -> None:
    breaker, phase, words = BUILT_IN_FAILURES[case]
    target = _site(project, tmp_path)
    _deployed(project)
    previous = _current(target)
    breaker(project, target)
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    failure = _read_failure(out)
    assert failure["ERROR_PHASE"] == phase
    assert words in failure["ERROR"]
    assert (failure["ERROR_HOOK"], failure["ERROR_EXIT_CODE"]) == ("", "")
    assert result.stderr.strip().splitlines() == [
        f"juncture: deploy failed in {phase}: {failure['ERROR']} (current -> releases/{previous})"
    ]
    assert not (target / "deploy.lock").exists()
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])


def test_a_full_file_system_fails_the_build_cleanly_and_keeps_the_previous_release(
    project: ProjectDir, tmp_path: Path, small_fs: Path
) -> None:
    target = small_fs / "target"
    _write_files(target / "shared", {"config/db.yml": SHARED_DB})
    _site(project, tmp_path, deploy_to=target)
    _deployed(project)
    previous = _current(target)
    # 3 MiB more source than the file system holds, in enough files for the copy to use helper processes
    _write_files(project.root / "app", {f"assets/a{i:03d}.bin": "x" * 10_000 for i in range(300)})
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    failure = _read_failure(out)
    assert failure["ERROR_PHASE"] == "deploy:updating"
    assert "No space left on device" in failure["ERROR"]
    assert result.stderr.strip().splitlines() == [
        f"juncture: deploy failed in deploy:updating: {failure['ERROR']} (current -> releases/{previous})"
    ]
    assert not (target / "deploy.lock").exists()
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])


def test_deploy_to_that_cannot_be_created_fails_in_deploy_starting(
    project: ProjectDir, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    target = _site(project, tmp_path, deploy_to=blocker / "target")
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    assert not out.exists()  # the lock was never taken: no deploy:failed
    assert result.stderr.strip().splitlines() == [
        f"juncture: deploy failed in deploy:starting: cannot create {target}: Not a directory (no current release)"
    ]
    assert blocker.read_text() == "not a directory\n"


def test_publishing_fails_when_current_is_a_real_directory_and_removes_the_new_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    _write_files(target / "current", {"index.html": "hand-made\n"})
    out = tmp_path / "failed"
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    failure = _read_failure(out)
    assert failure["ERROR_PHASE"] == "deploy:publishing"
    assert "is a directory, not a symlink" in failure["ERROR"]
    assert (target / "current" / "index.html").read_text() == "hand-made\n"
    _assert_no_unpublished_release(target, [])
    assert not [name for name in os.listdir(target) if name.endswith(".tmp")]
    assert not (target / "deploy.lock").exists()


def test_failing_failure_hook_does_not_hide_the_original_error(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    previous = _current(target)
    project.hook("deploy:updated", "50-fail", "#!/bin/sh\nexit 7\n")
    project.hook("deploy:failed", "10-broken", "#!/bin/sh\necho notifier down\nexit 9\n")
    project.hook("deploy:failed", "20-next", f"#!/bin/sh\ntouch {tmp_path}/next\n")

    result = _deploy(project)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("juncture: deploy failed in deploy:updated: event deploy:updated aborted: hook ")
    assert "deploy/updated.d/50-fail exited with code 7" in line
    assert "10-broken" not in line
    assert "a deploy:failed hook failed too" in result.stdout
    assert (tmp_path / "next").exists(), "a failing deploy:failed hook stopped the next one"
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])
    assert not (target / "deploy.lock").exists()


def test_hook_killed_by_a_signal_fails_the_deploy_with_exit_code_137(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    previous = _current(target)
    out = tmp_path / "failed"
    project.hook("deploy:updated", "50-die", "#!/bin/sh\nkill -9 $$\n")
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    result = _deploy(project)

    assert result.returncode == 1
    failure = _read_failure(out)
    assert failure["ERROR_EXIT_CODE"] == "137"
    assert "SIGKILL" in failure["ERROR"]
    assert failure["ERROR_HOOK"] == "deploy:updated/50-die"
    assert _current(target) == previous
    _assert_no_unpublished_release(target, [str(previous)])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_hook_stops_the_deploy_and_removes_the_new_release(
    project: ProjectDir, tmp_path: Path, signum: signal.Signals
) -> None:
    target = _site(project, tmp_path)
    _deployed(project)
    previous = _current(target)
    pids = tmp_path / "pids"
    out = tmp_path / "failed"
    project.hook(
        "deploy:updated",
        "50-sleep",
        f"""\
        #!/bin/sh
        sleep 30 &
        echo "$$ $! $JUNCTURE_RELEASE" > {pids}.tmp
        mv {pids}.tmp {pids}
        wait
        """,
    )
    project.hook("deploy:failed", "50-record", _failure_recorder(out))

    proc = _popen_deploy(project)
    try:
        _wait_for(pids, proc)
        shell, child, release = pids.read_text().split()
        assert (target / "releases" / release).is_dir()
        assert (target / "deploy.lock").exists()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        _stop(proc)

    assert proc.returncode == 130, stdout + stderr
    failure = _read_failure(out)
    assert failure["ERROR_PHASE"] == "deploy:updated"
    assert "interrupted" in failure["ERROR"]
    assert "juncture: deploy failed in deploy:updated" in stderr
    assert not (target / "deploy.lock").exists()
    assert _current(target) == previous
    assert not (target / "releases" / release).exists()
    _assert_no_unpublished_release(target, [str(previous)])
    assert not alive(int(shell))
    assert not alive(int(child))


# -- options, templates, sources --------------------------------------------------------------------


def test_dry_run_lists_phases_and_hooks_and_creates_nothing(project: ProjectDir, tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    _site(
        project,
        tmp_path,
        "tasks:\n  migrate: {run: 'touch migrated', on: [deploy:updated]}\n",
        deploy_to=target,
    )
    marker = tmp_path / "ran"
    project.hook("deploy:updated", "10-mark", f"#!/bin/sh\ntouch {marker}\n")
    project.hook("deploy:failed", "10-tell", f"#!/bin/sh\ntouch {marker}\n")

    result = _deploy(project, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert not target.exists()
    assert not marker.exists()
    assert not (project.root / "migrated").exists()
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "deploy:updating  [build the release directory]" in lines
    updated = lines.index("deploy:updated")
    assert lines[updated + 1] == "deploy:updated/10-mark  .juncture/hooks/deploy/updated.d/10-mark"
    assert lines[updated + 2].startswith("task migrate  juncture.yaml:")
    assert lines.index("deploy:updating  [build the release directory]") < updated
    assert "deploy:publishing  [swap `current` to the release]" in lines[updated:]
    assert "on failure: deploy:failed" in lines
    assert "deploy:failed/10-tell  .juncture/hooks/deploy/failed.d/10-tell" in lines


def test_skip_hooks_deploys_without_running_any_hook_or_task(project: ProjectDir, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    target = _site(
        project,
        tmp_path,
        f"tasks:\n  migrate: {{run: 'echo task >> {marks}', on: [deploy:updated]}}\n",
    )
    for event, _ in DEPLOY_ORDER:
        project.hook(event, "50-mark", _recorder(marks))

    _deployed(project, "--skip-hooks")

    assert not marks.exists()
    [release] = _releases(target)
    assert _current(target) == release
    assert (target / "current" / "index.html").read_text() == APP_FILES["index.html"]
    assert f"release={release}" in (target / "revisions.log").read_text()


def test_undefined_template_name_is_a_config_error_before_anything_runs(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = _site(
        project,
        tmp_path,
        "tasks:\n  migrate:\n    on: [deploy:published]\n    run: 'echo {{ greeting }} {{ gretting }}'\n",
    )
    text = (project.root / "juncture.yaml").read_text().splitlines()
    line = next(i for i, row in enumerate(text, 1) if "gretting" in row)
    marker = tmp_path / "ran"
    project.hook("pre-connect", "10-mark", f"#!/bin/sh\ntouch {marker}\n")
    # The target holds only its shared file: nothing else may appear.
    before = _tree(target)

    result = _deploy(project)

    assert result.returncode == 2
    [message] = result.stderr.strip().splitlines()
    assert f"{project.root}/juncture.yaml:{line}:" in message
    assert "At key: tasks ==> At key: migrate =====> run:" in message
    assert "'gretting' is undefined" in message
    assert "greeting" in message  # the names it could have been
    assert not marker.exists()
    assert _tree(target) == before


def test_source_exclude_patterns_leave_matching_paths_out_of_the_release(
    project: ProjectDir, tmp_path: Path
) -> None:
    _write_files(
        project.root / "app",
        {
            "scratch.tmp": "x",
            "css/deep/old.tmp": "x",
            "cache/blob": "x",
            "css/site.css.map": "x",
            "map/site.css.map": "kept: the pattern is anchored at css/",
        },
    )
    target = _site(project, tmp_path, source='{path: app, exclude: ["*.tmp", "cache", "css/*.map"]}')
    _deployed(project)
    files = set(_tree(target / "current"))
    assert files == {
        "index.html",
        "css/site.css",
        "config/app.yml",
        "config/db.yml",
        "log",
        "map/site.css.map",
    }


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=a@b", "-c", "user.name=n", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_git_source_exports_the_commit_and_version_is_the_commit(project: ProjectDir, tmp_path: Path) -> None:
    target = _site(project, tmp_path, source="{git: HEAD}")
    _git(project.root, "init", "-q")
    _git(project.root, "add", "app", "juncture.yaml")
    _git(project.root, "commit", "-qm", "first")
    commit = _git(project.root, "rev-parse", "HEAD")
    (project.root / "app" / "index.html").write_text("uncommitted change\n")
    (project.root / "app" / "untracked.txt").write_text("not in git\n")
    project.hook("deploy:updated", "50-version", f"#!/bin/sh\necho $JUNCTURE_VERSION > {tmp_path}/version\n")

    _deployed(project)

    current = target / "current"
    assert (current / "app" / "index.html").read_text() == APP_FILES["index.html"]
    assert not (current / "app" / "untracked.txt").exists()
    assert not (current / ".git").exists()
    assert not (current / ".juncture").exists()
    assert (current / "juncture.yaml").is_file()
    assert (current / "config" / "db.yml").read_text() == SHARED_DB
    assert (tmp_path / "version").read_text().strip() == commit
    assert f"version={commit}" in (target / "revisions.log").read_text()


def test_git_source_with_an_unknown_ref_is_refused_before_anything_is_created(
    project: ProjectDir, tmp_path: Path
) -> None:
    target = tmp_path / "fresh-target"
    _site(project, tmp_path, source="{git: no-such-branch}", deploy_to=target)
    _git(project.root, "init", "-q")
    _git(project.root, "add", "app", "juncture.yaml")
    _git(project.root, "commit", "-qm", "first")
    result = _deploy(project)
    assert result.returncode == 2
    assert "no-such-branch" in result.stderr
    assert not target.exists()


def test_a_release_in_the_same_second_sorts_after_pruned_names(tmp_path: Path) -> None:
    from juncture.release.local import LocalTarget, release_key

    target = LocalTarget(str(tmp_path))
    os.makedirs(tmp_path / "releases")
    now = time.time()
    # The base name and `.1` were pruned; only `.2` is left, for this second and the next.
    for t in (now, now + 1):
        base = time.strftime("%Y%m%d%H%M%S", time.gmtime(t))
        os.makedirs(tmp_path / "releases" / f"{base}.2")
    name = target.new_release_name()
    assert all(
        release_key(name) > release_key(n)
        for n in os.listdir(tmp_path / "releases")
        if n.split(".")[0] == name.split(".")[0]
    )
    assert name not in os.listdir(tmp_path / "releases")
