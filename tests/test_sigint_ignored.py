"""One SIGINT rule for the whole run: a juncture started with SIGINT ignored (`juncture deploy … &` in a
script: the shell ignores SIGINT for background jobs) ignores it during hooks as during built-in steps,
and goes on to the end. SIGTERM still stops it (exit 130)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ProjectDir

# Each run's hook takes the next number and waits for `go-<n>`: the test decides when it ends.
HOOK = """\
#!/bin/sh
n=$(ls {marks} | wc -l)
touch {marks}/$n
while [ ! -e {root}/go-$n ]; do sleep 0.02; done
"""


def deploy(project: ProjectDir, tmp_path: Path, name: str, ignore_int: bool) -> subprocess.Popen[str]:
    """`juncture deploy production`, its output in `tmp_path/<name>.out`; with SIGINT ignored from the
    start when `ignore_int` (as `sh -c 'trap "" INT; exec …'` does)."""
    argv = [sys.executable, "-m", "juncture", "-C", str(project.root), "deploy", "production"]
    argv += ["--lock-wait", "60"]
    if ignore_int:
        argv = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]
    with open(tmp_path / f"{name}.out", "w") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True)


def setup(project: ProjectDir, tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    project.config("app: shop\nstages:\n  production:\n    deploy_to: deploy\n")
    project.hook("deploy:updated", "10-wait", HOOK.format(marks=tmp_path / "marks", root=tmp_path))


def wait_for_mark(tmp_path: Path, n: int) -> None:
    deadline = time.monotonic() + 20
    while not (tmp_path / "marks" / str(n)).exists():
        assert time.monotonic() < deadline, f"hook {n} never started"
        time.sleep(0.02)


def still_running(proc: subprocess.Popen[str], seconds: float = 0.5) -> bool:
    time.sleep(seconds)
    return proc.poll() is None


def test_sigint_ignored_at_start_stays_ignored_in_built_in_steps_and_hooks(
    project: ProjectDir, tmp_path: Path
) -> None:
    setup(project, tmp_path)
    holder = deploy(project, tmp_path, "holder", ignore_int=False)
    wait_for_mark(tmp_path, 0)  # the holder runs its hook, with the deploy lock held
    background = deploy(project, tmp_path, "background", ignore_int=True)
    wait_for_lock_wait(tmp_path, "background")
    background.send_signal(signal.SIGINT)  # during a built-in step: taking the lock
    assert still_running(background)
    (tmp_path / "go-0").touch()
    assert holder.wait(timeout=30) == 0
    wait_for_mark(tmp_path, 1)
    background.send_signal(signal.SIGINT)  # during its hook
    assert still_running(background)
    (tmp_path / "go-1").touch()
    assert background.wait(timeout=30) == 0, (tmp_path / "background.out").read_text()
    assert "deployed" in (tmp_path / "background.out").read_text()


def wait_for_lock_wait(tmp_path: Path, name: str) -> None:
    deadline = time.monotonic() + 20
    while "waiting for the deploy lock" not in (tmp_path / f"{name}.out").read_text():
        assert time.monotonic() < deadline, f"{name} never waited for the lock"
        time.sleep(0.02)


def test_sigterm_still_stops_a_run_that_ignores_sigint(project: ProjectDir, tmp_path: Path) -> None:
    setup(project, tmp_path)
    background = deploy(project, tmp_path, "background", ignore_int=True)
    wait_for_mark(tmp_path, 0)
    waiting = deploy(project, tmp_path, "waiting", ignore_int=True)
    wait_for_lock_wait(tmp_path, "waiting")
    waiting.send_signal(signal.SIGTERM)  # during a built-in step: taking the lock
    assert waiting.wait(timeout=30) == 130, (tmp_path / "waiting.out").read_text()
    assert "interrupted during deploy:starting" in (tmp_path / "waiting.out").read_text()
    background.send_signal(signal.SIGTERM)  # during a hook
    assert background.wait(timeout=30) == 130, (tmp_path / "background.out").read_text()
    assert "interrupted during deploy:updated" in (tmp_path / "background.out").read_text()
    assert not (project.root / "deploy" / "deploy.lock").exists()
