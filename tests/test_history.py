"""`juncture history`: every run recorded with its hooks and steps, a killed run, the HTML timeline."""

from __future__ import annotations

import glob
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import ProjectDir, alive


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _runs(project: ProjectDir, *args: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(_ok(project.run("history", "--json", *args)).stdout)
    return runs


def _shown(project: ProjectDir, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(_ok(project.run("history", run_id, "--json")).stdout)
    return shown


def _deploy_site(project: ProjectDir, tmp_path: Path, extra: str = "") -> None:
    """A local deploy: an `app` directory deployed to `<tmp>/target` by the stage production."""
    (project.root / "app").mkdir()
    (project.root / "app" / "index.html").write_text("<h1>shop</h1>\n")
    project.config(
        f"app: shop\nsource: app\nstages:\n  production:\n    deploy_to: {tmp_path}/target\n"
        f"  staging:\n    deploy_to: {tmp_path}/staging\n" + extra
    )


def test_runs_are_listed_newest_first_with_verb_event_and_status(project: ProjectDir) -> None:
    project.hook("good", "10-ok", "#!/bin/sh\ntrue\n")
    project.hook("bad", "10-fail", "#!/bin/sh\nexit 1\n")
    _ok(project.run("fire", "good"))
    assert project.run("fire", "bad").returncode == 1
    _ok(project.run("fire", "good", "--verb", "start"))
    lines = _ok(project.run("history")).stdout.splitlines()
    assert len(lines) == 3
    fields = [line.split("  ") for line in lines]
    # id verb stage event version who when status duration
    assert [(f[1], f[2], f[3], f[7]) for f in fields] == [
        ("start", "-", "good", "ok"),
        ("fire", "-", "bad", "failed"),
        ("fire", "-", "good", "ok"),
    ]
    runs = _runs(project)
    assert [r["id"] for r in runs] == [f[0] for f in fields]
    assert [(r["verb"], r["event"], r["status"], r["exit_code"]) for r in runs] == [
        ("start", "good", "ok", 0),
        ("fire", "bad", "failed", 1),
        ("fire", "good", "ok", 0),
    ]
    for run in runs:
        assert set(run) == {
            "id",
            "verb",
            "stage",
            "event",
            "version",
            "who",
            "started_at",
            "ended_at",
            "status",
            "exit_code",
        }
        assert run["stage"] is None
        assert "@" in run["who"]
        assert run["started_at"] <= run["ended_at"] <= time.time()
    assert runs[0]["started_at"] >= runs[1]["started_at"] >= runs[2]["started_at"]


def test_stage_filter_lists_deploys_rollbacks_tasks_and_fires_of_that_stage_only(
    project: ProjectDir, tmp_path: Path
) -> None:
    _deploy_site(project, tmp_path, "tasks:\n  hello: echo hello\n")
    project.hook("ev", "10-ok", "#!/bin/sh\ntrue\n")
    _ok(project.run("deploy", "production"))
    _ok(project.run("deploy", "production"))
    _ok(project.run("rollback", "production"))
    _ok(project.run("run", "production", "hello"))
    _ok(project.run("fire", "ev", "--stage", "production"))
    _ok(project.run("fire", "ev", "--stage", "staging"))
    _ok(project.run("fire", "ev"))
    production = _runs(project, "--stage", "production")
    assert [(r["verb"], r["stage"], r["status"]) for r in production] == [
        ("fire", "production", "ok"),
        ("run", "production", "ok"),
        ("rollback", "production", "ok"),
        ("deploy", "production", "ok"),
        ("deploy", "production", "ok"),
    ]
    lines = _ok(project.run("history", "--stage", "staging")).stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].split("  ")[1:4] == ["fire", "staging", "ev"]
    assert len(_runs(project)) == 7


def test_run_json_lists_each_hook_with_status_exit_code_and_target(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  ev: {failure: continue}\n")
    project.hook("ev", "10-ok", "#!/bin/sh\necho all good\n")
    project.hook("ev", "20-fail", "#!/bin/sh\necho 'it broke' >&2\nexit 3\n")
    project.hook("ev", "30-ok", "#!/bin/sh\ntrue\n")
    _ok(project.run("fire", "ev"))
    (run,) = _runs(project)
    shown = _shown(project, run["id"])
    assert shown["run"] == run
    items = shown["items"]
    assert [(i["target"], i["kind"], i["event"], i["name"], i["status"], i["exit_code"]) for i in items] == [
        ("local", "hook", "ev", "ev/10-ok", "ok", 0),
        ("local", "hook", "ev", "ev/20-fail", "failed", 3),
        ("local", "hook", "ev", "ev/30-ok", "ok", 0),
    ]
    assert "all good" in items[0]["output_tail"]
    assert "it broke" in items[1]["output_tail"]
    for before, after in itertools.pairwise(items):
        assert before["ended_at"] <= after["started_at"]
    assert run["started_at"] <= items[0]["started_at"] <= items[-1]["ended_at"] <= run["ended_at"]


def test_failed_run_is_recorded_failed_with_exit_code_1(project: ProjectDir) -> None:
    project.hook("ev", "10-fail", "#!/bin/sh\necho 'no database' >&2\nexit 1\n")
    project.hook("ev", "20-never", "#!/bin/sh\ntrue\n")
    assert project.run("fire", "ev").returncode == 1
    (run,) = _runs(project)
    assert (run["status"], run["exit_code"]) == ("failed", 1)
    items = _shown(project, run["id"])["items"]
    assert [(i["name"], i["status"], i["exit_code"]) for i in items] == [("ev/10-fail", "failed", 1)]
    text = _ok(project.run("history", run["id"])).stdout
    assert text.splitlines()[0].split("  ")[7] == "failed"
    assert "no database" in text  # a failed item's output tail is shown


def test_local_deploy_records_steps_and_hooks_with_phases(project: ProjectDir, tmp_path: Path) -> None:
    _deploy_site(project, tmp_path)
    project.hook("deploy:updated", "10-after-update", "#!/bin/sh\ntrue\n")
    project.hook("post-deploy", "10-notify", "#!/bin/sh\ntrue\n")
    _ok(project.run("deploy", "production"))
    (run,) = _runs(project)
    assert (run["verb"], run["stage"], run["status"], run["exit_code"]) == ("deploy", "production", "ok", 0)
    items = _shown(project, run["id"])["items"]
    assert {i["kind"] for i in items} == {"step", "hook"}
    assert all(i["target"] == "local" and i["status"] == "ok" for i in items)
    hooks = [(i["phase"], i["event"], i["name"]) for i in items if i["kind"] == "hook"]
    assert hooks == [
        ("deploy:updated", "deploy:updated", "deploy:updated/10-after-update"),
        ("deploy:finished", "post-deploy", "post-deploy/10-notify"),
    ]
    steps = [i["phase"] for i in items if i["kind"] == "step"]
    for phase in ("deploy:starting", "deploy:updating", "deploy:publishing", "deploy:finished"):
        assert phase in steps
    assert all(i["phase"] for i in items)  # every item of a deploy belongs to a phase
    order = [i["phase"] for i in items]
    assert order.index("deploy:updating") < order.index("deploy:updated") < order.index("deploy:publishing")
    starts = [i["started_at"] for i in items]
    assert starts == sorted(starts)


def test_killed_run_shows_interrupted(project: ProjectDir, tmp_path: Path) -> None:
    started = tmp_path / "started"
    project.hook(
        "ev", "10-slow", f"#!/bin/sh\necho $$ > {started}.tmp\nmv {started}.tmp {started}\nexec sleep 60\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hook_pid = 0
    try:
        deadline = time.monotonic() + 15
        while not started.exists():
            assert proc.poll() is None, "juncture ended before its hook started"
            assert time.monotonic() < deadline, "the hook never started"
            time.sleep(0.02)
        hook_pid = int(started.read_text())
        (running,) = _runs(project)
        assert running["status"] == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if hook_pid and alive(hook_pid):
            os.kill(hook_pid, signal.SIGKILL)
    (run,) = _runs(project)
    assert run["id"] == running["id"]
    assert run["status"] == "interrupted"
    line = _ok(project.run("history")).stdout.splitlines()[0]
    assert line.split("  ")[0] == run["id"]
    assert line.split("  ")[7] == "interrupted"
    assert _shown(project, run["id"])["run"]["status"] == "interrupted"
    # The killed run's private outputs directory is removed by the next run that needs one.
    left = [
        p for p in glob.glob(f"/dev/shm/juncture-{run['id']}-*") + glob.glob(f"/tmp/juncture-{run['id']}-*")
    ]
    assert left, "the killed run had an outputs directory"
    project.hook("ev2", "10-quick", "#!/bin/sh\ntrue\n")
    _ok(project.run("fire", "ev2"))
    assert not any(os.path.exists(p) for p in left)


def test_html_has_one_bar_per_item(project: ProjectDir, tmp_path: Path) -> None:
    project.config("app: shop\nevents:\n  ev: {failure: continue}\n")
    for name, body in (("10-a", "true"), ("20-b", "exit 2"), ("30-c", "echo hi")):
        project.hook("ev", name, f"#!/bin/sh\n{body}\n")
    _ok(project.run("fire", "ev"))
    (run,) = _runs(project)
    page = tmp_path / "timeline.html"
    result = _ok(project.run("history", run["id"], "--html", str(page)))
    assert str(page) in result.stdout
    html = page.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    items = _shown(project, run["id"])["items"]
    assert len(items) == 3
    assert html.count('class="bar ') == len(items)
    for item in items:
        assert item["name"] in html


def test_unknown_run_id_exits_2(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("ev", "10-ok", "#!/bin/sh\ntrue\n")
    _ok(project.run("fire", "ev"))  # the store exists and holds a run, just not this one
    result = project.run("history", "20990101T000000Z-000000", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "20990101T000000Z-000000" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    result = project.run("history", "nope", "--html", str(tmp_path / "page.html"))
    assert result.returncode == 2
    assert not (tmp_path / "page.html").exists()
