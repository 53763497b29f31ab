"""Running hooks: failure modes, timeouts, parallelism, output and its memory bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ProjectDir, alive


def _json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_hooks_run_in_order_flat_file_first(project: ProjectDir, tmp_path: Path) -> None:
    log = tmp_path / "order"
    for name in ("20-b", "10-a.sh", "30-c"):
        project.hook("ev", name, f"#!/bin/sh\necho {name} >> {log}\n")
    project.hook("ev", None, f"#!/bin/sh\necho flat >> {log}\n")
    result = project.run("fire", "ev")
    assert result.returncode == 0, result.stderr
    assert log.read_text().split() == ["flat", "10-a.sh", "20-b", "30-c"]


def test_abort_stops_at_first_failure_and_names_hook_and_code(project: ProjectDir, tmp_path: Path) -> None:
    project.config("events:\n  ev: {failure: abort}\n")
    project.hook("ev", "10-ok", f"#!/bin/sh\ntouch {tmp_path}/10\n")
    bad = project.hook("ev", "20-bad", "#!/bin/sh\necho 'migration broke' >&2\nexit 3\n")
    project.hook("ev", "30-later", f"#!/bin/sh\ntouch {tmp_path}/30\n")
    result = project.run("fire", "ev")
    assert result.returncode == 1
    assert (tmp_path / "10").exists()
    assert not (tmp_path / "30").exists(), "a hook after the failure started"
    assert result.stderr.strip().splitlines() == [
        f"juncture: event ev aborted: hook {bad} exited with code 3"
    ]
    assert "migration broke" in result.stdout  # the failed hook's output is shown in full
    assert "1 not started" in result.stdout


def test_continue_reports_failure_and_runs_every_remaining_hook(project: ProjectDir, tmp_path: Path) -> None:
    project.config("events:\n  ev: {failure: continue}\n")
    project.hook("ev", "10-bad", "#!/bin/sh\necho first failure\nexit 1\n")
    project.hook("ev", "20-bad", "#!/bin/sh\nkill -9 $$\n")
    project.hook("ev", "30-ok", f"#!/bin/sh\ntouch {tmp_path}/30\n")
    result = project.run("fire", "ev")
    assert result.returncode == 0
    assert (tmp_path / "30").exists()
    assert "ev/10-bad  exited with code 1" in result.stdout
    assert "first failure" in result.stdout
    assert "ev/20-bad  was killed by signal SIGKILL" in result.stdout
    assert "1 ok, 2 failed (continue)" in result.stdout


def test_executable_without_shebang_fails_with_exec_format_error(project: ProjectDir) -> None:
    project.hook("ev", "10-plain", "echo no shebang\n")
    result = project.run("fire", "ev")
    assert result.returncode == 1
    assert "could not start: Exec format error" in result.stderr


def test_timeout_kills_term_trapping_hook_and_everything_it_forked(
    project: ProjectDir, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    project.config("events:\n  ev: {timeout: 1, grace: 0.5}\n")
    project.hook(
        "ev",
        "10-stubborn",
        f"""\
        #!/bin/sh
        trap 'echo got TERM, ignoring it' TERM
        (trap '' TERM; exec sleep 300) &
        echo $! >> {pids}
        sleep 300 &
        echo $! >> {pids}
        echo $$ >> {pids}
        while :; do sleep 0.05; done
        """,
    )
    started = time.monotonic()
    result = project.run("fire", "ev")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "timed out after 1 s" in result.stdout
    assert "timed out after 1 s" in result.stderr
    assert "got TERM, ignoring it" in result.stdout
    survivors = [int(pid) for pid in pids.read_text().split() if alive(int(pid))]
    assert survivors == []


def test_timeout_of_continue_event_still_runs_later_hooks(project: ProjectDir, tmp_path: Path) -> None:
    project.config("events:\n  ev: {timeout: 0.5, grace: 0.2, failure: continue}\n")
    project.hook("ev", "10-slow", "#!/bin/sh\nexec sleep 30\n")
    project.hook("ev", "20-next", f"#!/bin/sh\ntouch {tmp_path}/next\n")
    result = project.run("fire", "ev", "--json")
    assert result.returncode == 0
    ends = [e for e in _json_lines(result.stdout) if e["type"] == "hook-end"]
    assert [(e["hook"], e["status"]) for e in ends] == [("ev/10-slow", "timeout"), ("ev/20-next", "ok")]
    assert (tmp_path / "next").exists()


def test_parallel_runs_at_most_n_hooks_at_once(project: ProjectDir, tmp_path: Path) -> None:
    project.config("events:\n  ev: {parallel: 2}\n")
    for i in range(5):
        project.hook(
            "ev",
            f"{i}0-h",
            f"#!/bin/sh\necho start $(date +%s.%N) >> {tmp_path}/h{i}\nsleep 0.3\n"
            f"echo end $(date +%s.%N) >> {tmp_path}/h{i}\n",
        )
    result = project.run("fire", "ev")
    assert result.returncode == 0, result.stdout + result.stderr
    intervals = []
    for i in range(5):
        stamps = dict(line.split() for line in (tmp_path / f"h{i}").read_text().splitlines())
        intervals.append((float(stamps["start"]), float(stamps["end"])))
    most = max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)
    assert most == 2


def test_default_parallel_is_one_at_a_time(project: ProjectDir, tmp_path: Path) -> None:
    for i in range(3):
        project.hook(
            "ev", f"{i}0-h", f"#!/bin/sh\necho s >> {tmp_path}/trace\nsleep 0.1\necho e >> {tmp_path}/trace\n"
        )
    assert project.run("fire", "ev").returncode == 0
    assert (tmp_path / "trace").read_text().split() == ["s", "e"] * 3


def test_verbose_streams_lines_prefixed_with_hook_name_before_hook_ends(
    project: ProjectDir, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    project.hook(
        "ev",
        "10-talk",
        f"#!/bin/sh\necho hello\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho bye\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev", "-v"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    assert lines == ["→ ev/10-talk\n", "[10-talk] hello\n"]  # shown while the hook still runs
    gate.touch()
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    assert rest.startswith("[10-talk] bye\n✓ ev/10-talk")


def test_quiet_prints_only_failures(project: ProjectDir) -> None:
    project.config("events:\n  ev: {failure: continue}\n")
    project.hook("ev", "10-ok", "#!/bin/sh\necho fine\n")
    project.hook("ev", "20-bad", "#!/bin/sh\necho broken\nexit 4\n")
    result = project.run("fire", "ev", "-q")
    assert result.stdout.splitlines()[0].endswith(" ms") and "ev/20-bad  exited with code 4" in result.stdout
    assert "10-ok" not in result.stdout and "fine" not in result.stdout
    assert "    broken" in result.stdout


def test_json_writes_only_json_objects_for_each_step(project: ProjectDir) -> None:
    project.hook("ev", "10-a", "#!/bin/sh\necho one\necho two >&2\n")
    result = project.run("fire", "ev", "--json")
    events = _json_lines(result.stdout)  # fails if any line is not JSON
    assert [e["type"] for e in events] == [
        "run-start",
        "hook-start",
        "hook-output",
        "hook-output",
        "hook-end",
        "run-end",
    ]
    assert [e["line"] for e in events if e["type"] == "hook-output"] == ["one", "two"]
    assert events[-1]["status"] == "ok" and events[-1]["exit_code"] == 0
    assert result.stderr == ""


def test_output_is_logged_in_full_to_private_file(project: ProjectDir) -> None:
    project.hook("ev", "10-a", "#!/bin/sh\necho logged line\n")
    result = project.run("fire", "ev", "--json")
    end = next(e for e in _json_lines(result.stdout) if e["type"] == "hook-end")
    log = Path(str(end["log"]))
    assert log.is_relative_to(project.root / ".juncture" / "logs")
    assert log.read_text() == "logged line\n"
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700


def _max_rss_kb(args: list[str]) -> tuple[int, int]:
    """Run juncture in a child of a fresh interpreter and return (exit code, peak RSS of its children in KiB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True)
    code, rss = out.stdout.split()
    return int(code), int(rss)


def test_memory_stays_bounded_when_a_hook_prints_far_more(project: ProjectDir) -> None:
    size = 200 * 1024 * 1024
    project.hook("ev", "10-flood", f"#!/bin/sh\nyes 'a line of hook output' | head -c {size}\nexit 1\n")
    base = [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev"]
    code, rss_kb = _max_rss_kb(base)
    assert code == 1
    assert rss_kb < 60 * 1024, f"juncture grew to {rss_kb} KiB"
    logs = list((project.root / ".juncture" / "logs").glob("*/*.log"))
    assert [p.stat().st_size for p in logs] == [size]


def test_memory_stays_bounded_when_streaming_verbose_output(project: ProjectDir) -> None:
    project.hook("ev", "10-flood", "#!/bin/sh\nyes 'a line of hook output' | head -c 50000000\n")
    code, rss_kb = _max_rss_kb(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "ev", "-v"]
    )
    assert code == 0
    assert rss_kb < 60 * 1024, f"juncture grew to {rss_kb} KiB"


def test_failed_hook_output_beyond_the_tail_points_to_the_log(project: ProjectDir) -> None:
    project.hook("ev", "10-loud", "#!/bin/sh\nseq 1 100000\necho LAST LINE\nexit 2\n")
    result = project.run("fire", "ev")
    assert result.returncode == 1
    assert "earlier bytes not shown; full output:" in result.stdout
    assert result.stdout.rstrip().splitlines()[-2].strip() == "LAST LINE"


def test_stdin_is_dev_null_unless_event_inherits_it(project: ProjectDir, tmp_path: Path) -> None:
    project.config("events:\n  inherit: {stdin: inherit}\n")
    for event in ("plain", "inherit"):
        project.hook(event, "10-read", f"#!/bin/sh\ncat > {tmp_path}/{event}\n")
    assert project.run("fire", "plain", input="typed by the operator\n").returncode == 0
    assert project.run("fire", "inherit", input="typed by the operator\n").returncode == 0
    assert (tmp_path / "plain").read_text() == ""
    assert (tmp_path / "inherit").read_text() == "typed by the operator\n"


def test_hook_runs_in_project_root(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("ev", "10-pwd", f"#!/bin/sh\npwd > {tmp_path}/cwd\n")
    sub = project.root / "sub"
    sub.mkdir()
    result = subprocess.run([sys.executable, "-m", "juncture", "fire", "ev"], cwd=sub, capture_output=True)
    assert result.returncode == 0
    assert (tmp_path / "cwd").read_text().strip() == os.path.realpath(project.root)


def test_hook_starts_with_sigpipe_at_default_not_ignored_like_python(
    project: ProjectDir, tmp_path: Path
) -> None:
    project.hook("ev", "10-sig", f"#!/bin/sh\ngrep SigIgn /proc/$$/status > {tmp_path}/sig\n")
    assert project.run("fire", "ev").returncode == 0
    ignored = int((tmp_path / "sig").read_text().split()[1], 16)
    assert not ignored & (1 << (13 - 1)), "SIGPIPE is ignored in the hook"
