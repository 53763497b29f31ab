"""`logs: {keep_runs, max_bytes}`: at the start of a run, the oldest runs' logs under `.juncture/logs`
go, the newest stay, and neither the current run's logs nor those of a run still going are touched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ProjectDir


def _old_runs(project: ProjectDir, count: int, size: int, year: int = 2020) -> list[str]:
    """`count` run directories of earlier runs (oldest first), each holding `size` bytes of log."""
    names = []
    for i in range(count):
        name = f"{year}0101T00{i // 60:02d}{i % 60:02d}Z-{i:06x}"
        hook_dir = project.root / ".juncture" / "logs" / name / "01-deploy-starting"
        hook_dir.mkdir(parents=True)
        (hook_dir / "001-10-say.log").write_bytes(b"x" * size)
        names.append(name)
    return names


def _runs_left(project: ProjectDir) -> list[str]:
    return sorted(p.name for p in (project.root / ".juncture" / "logs").iterdir() if p.is_dir())


def _fire(project: ProjectDir) -> str:
    """Fire `ev` (its hook prints a line, so the run has a log); the new run's id."""
    fired = project.run("fire", "ev", "--json")
    assert fired.returncode == 0, fired.stdout + fired.stderr
    newest: str = json.loads(project.run("history", "--json").stdout)[0]["id"]
    return newest


@pytest.fixture
def logging_project(project: ProjectDir) -> ProjectDir:
    project.hook("ev", "10-say", "#!/bin/sh\necho hello from the hook\n")
    return project


def test_keep_runs_keeps_the_newest_runs_and_the_current_one(logging_project: ProjectDir) -> None:
    project = logging_project
    project.config("app: shop\nlogs:\n  keep_runs: 5\n")
    old = _old_runs(project, 30, 100)
    (project.root / ".juncture" / "logs" / "timeline.html").write_text("<html/>")  # not a run: kept
    current = _fire(project)
    assert _runs_left(project) == [*old[-5:], current]
    assert (project.root / ".juncture" / "logs" / current / "001-10-say.log").read_text() == (
        "hello from the hook\n"
    )
    assert (project.root / ".juncture" / "logs" / "timeline.html").exists()
    # Sizes recorded (the new run's at its end, the others' when first measured): no walk next time.
    with sqlite3.connect(project.root / ".juncture" / "state" / "juncture.db") as db:
        recorded = dict(db.execute("SELECT run_id, bytes FROM run_logs"))
    assert recorded == {**dict.fromkeys(old[-5:], 100), current: len("hello from the hook\n")}
    second = _fire(project)  # the next run counts the previous one among the five
    assert _runs_left(project) == sorted([*old[-4:], current, second])


def test_max_bytes_removes_the_oldest_until_the_rest_fits(logging_project: ProjectDir) -> None:
    project = logging_project
    project.config("app: shop\nlogs:\n  max_bytes: 350K\n")  # keep_runs stays 50
    old = _old_runs(project, 20, 100 * 1024)
    current = _fire(project)
    assert _runs_left(project) == [*old[-3:], current]  # 3 x 100 KiB <= 350 KiB < 4 x 100 KiB


def test_defaults_keep_fifty_runs(logging_project: ProjectDir) -> None:
    project = logging_project
    old = _old_runs(project, 60, 10)
    current = _fire(project)
    assert _runs_left(project) == [*old[-50:], current]


def test_a_run_still_going_keeps_its_logs_until_its_process_is_gone(logging_project: ProjectDir) -> None:
    project = logging_project
    project.config("app: shop\nlogs:\n  keep_runs: 2\n")
    project.hook("slow", "10-wait", "#!/bin/sh\necho started\nexec sleep 60\n")
    slow = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        logs = project.root / ".juncture" / "logs"
        deadline = time.monotonic() + 30
        while not list(logs.glob("*/001-10-wait.log")):
            assert time.monotonic() < deadline and slow.poll() is None, "the slow run never logged"
            time.sleep(0.05)
        (running,) = [p.parent.name for p in logs.glob("*/001-10-wait.log")]
        while time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) <= running[:16]:
            time.sleep(0.05)  # run ids order runs to the second: the next ones start later
        later = _old_runs(project, 10, 10, year=2099)  # sorted after it: the running one is the oldest
        current = _fire(project)
        assert _runs_left(project) == sorted([running, current, later[-1]])
        os.killpg(slow.pid, signal.SIGKILL)  # it never records its end: history says interrupted
        slow.wait()
        after = _fire(project)
        assert _runs_left(project) == sorted([current, after, later[-1]])
    finally:
        if slow.poll() is None:
            os.killpg(slow.pid, signal.SIGKILL)
            slow.wait()


@pytest.mark.parametrize(
    ("logs", "problem"),
    [
        ("{keep_runs: -1}", "keep_runs: expected a whole number from 0"),
        ("{keep_runs: 2.5}", "keep_runs: expected a whole number from 0"),
        ("{max_bytes: 12X}", "max_bytes: expected a size"),
        ("{max_bytes: -5}", "max_bytes: expected a size"),
        ("{max_bytes: true}", "max_bytes: expected a size"),
        ("{max_bytes: 99999999999999999999999999999G}", "max_bytes: expected a size"),
        ("{keep: 3}", "keep: unknown key (did you mean 'keep_runs'?)"),
        ("[1]", "logs: expected a mapping"),
    ],
)
def test_bad_logs_settings_are_config_errors_with_file_and_line(
    project: ProjectDir, logs: str, problem: str
) -> None:
    project.config(f"app: shop\n\nlogs: {logs}\n")
    result = project.run("list")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "juncture.yaml:3:" in result.stderr and problem in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1048576", 1048576), ("500M", 500 << 20), ("2G", 2 << 30), ("64k", 64 << 10), ("1GiB", 1 << 30)],
)
def test_sizes_are_bytes_or_a_number_with_a_unit(project: ProjectDir, size: str, expected: int) -> None:
    project.config(f"app: shop\nlogs:\n  max_bytes: {size}\n")
    from juncture.project import load_project

    assert load_project(str(project.root)).config.max_log_bytes == expected
