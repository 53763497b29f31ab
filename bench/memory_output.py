"""Benchmark: juncture's peak memory while a hook prints 1 GB, on an SSH host and in a Podman container.

One run starts a private OpenSSH sshd on 127.0.0.1 (`tests/servers.py`'s `start_sshd`) and a private
Podman with one busybox container (`start_podman`), and a throwaway project whose stages put one hook on
that "host" and in that container. Each hook runs `yes LINE | head -c SIZE`: the loud hook prints it,
the silent one sends the same bytes to /dev/null. For each target it runs, interleaved, in a fresh
process each time, `juncture -C PROJECT fire EVENT --stage STAGE -q` (juncture's `main()` in a small
wrapper, with the interpreter running this script), and takes two peak RSS figures of that process:

* the process tree, from `os.wait4`: the kernel's figure for the child and the children it waited for
  (the `podman exec` client among them), what `getrusage(RUSAGE_CHILDREN)` of a wrapper around it gives;
* juncture alone: the wrapper's `getrusage(RUSAGE_SELF)` once `main()` has returned. The `podman exec`
  client (about 35 MB) is bigger than juncture without asyncssh, so only this figure shows juncture's
  own memory for a container.

It reports the medians and the difference loud - silent of each against the target, and checks that
every loud run exited 0 with all SIZE bytes in the hook's log file.

It is a measurement, not a test: it prints PASS/MISS next to each target and exits 0 (2 when juncture,
sshd or Podman cannot be found, 1 when a run fails or its log file is short).

    python bench/memory_output.py [--quick] [--json FILE]
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from timing import BenchError, run_main, verdict, write_report

# tests/ is not a package: its servers module (the sshd and Podman fixtures) is imported from the path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from servers import Podman, SshServer, podman_missing, sshd_binary, start_podman, start_sshd

SIZE = 1_000_000_000  # bytes the loud hook prints
REPETITIONS = 3
QUICK_REPETITIONS = 1
TARGET_MB = 40.0  # peak RSS, loud run minus silent run: at most (MB = 10**6 bytes)
LINE = "juncture memory benchmark: a line of output that is about eighty characters long"
CONTAINER = "juncture-bench-memory"
TARGETS = {"ssh host": "host", "container": "box"}  # name -> stage


def hook(size: int, silent: bool) -> str:
    sink = " > /dev/null" if silent else ""
    return f"#!/bin/sh\nyes '{LINE}' | head -c {size}{sink}\n"


def make_project(root: str, server: SshServer) -> str:
    project = os.path.join(root, "project")
    events: dict[str, Any] = {}
    for audience, stage in (("hosts", "host"), ("container:bench", "box")):
        for kind, silent in (("loud", False), ("silent", True)):
            event = f"{kind}-{stage}"
            events[event] = {"audience": audience, "timeout": 600}
            path = os.path.join(project, ".juncture", "hooks", f"{event}.d", "10-print")
            os.makedirs(os.path.dirname(path))
            with open(path, "w") as handle:
                handle.write(hook(SIZE, silent))
            os.chmod(path, 0o755)
    config = {
        "app": "bench",
        "events": events,
        "stages": {
            "host": {
                "deploy_to": os.path.join(root, "deployed"),
                "hosts": [{"name": "h1", "address": "127.0.0.1"}],
                "ssh": server.ssh_options(),
            },
            "box": {
                "deploy_to": os.path.join(root, "deployed"),
                "containers": [{"name": CONTAINER, "kind": "bench"}],
            },
        },
    }
    with open(os.path.join(project, "juncture.yaml"), "w") as handle:
        json.dump(config, handle, indent=1)  # JSON is YAML
    return project


# juncture's `main()`, then its own peak RSS (KiB) as the last line on stderr, and the exit `entry()` makes.
WRAPPER = """\
import os, resource, sys
from juncture.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
os.write(2, b"\\npeak-rss %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
os._exit(code)
"""


def peak_rss(args: list[str], env: Mapping[str, str]) -> tuple[int, int, float]:
    """Peak RSS in bytes of a fresh juncture process running `args`: with the children it waited for,
    and alone; and its wall time. Raises BenchError unless it exits 0."""
    argv = [sys.executable, "-c", WRAPPER, *args]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        errors.seek(0)
        text = errors.read().decode("utf-8", "replace").strip()
    if process.returncode != 0 or not text.rpartition("\n")[2].startswith("peak-rss "):
        raise BenchError(f"`juncture {' '.join(args)}` exited with {process.returncode}: {text[-2000:]}")
    alone = int(text.rpartition("\n")[2].split()[1])
    return usage.ru_maxrss * 1024, alone * 1024, elapsed


def check_log(project: str, event: str, since: float) -> None:
    """The loud run's log file holds every byte the hook printed (streamed there, not kept in memory)."""
    logs = glob.glob(os.path.join(project, ".juncture", "logs", "**", "*.log"), recursive=True)
    fresh = [path for path in logs if os.path.getmtime(path) >= since]
    sizes = [os.path.getsize(path) for path in fresh]
    if SIZE not in sizes:
        raise BenchError(f"{event}: no log file of {SIZE} bytes among this run's logs ({sizes})")
    for path in fresh:  # 1 GB each: don't fill the disk over the repetitions
        os.unlink(path)


def mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        "memory_output",
        "Peak RSS of juncture while a hook prints 1 GB on an SSH host and in a Podman container.",
        f"{QUICK_REPETITIONS} repetition instead of {REPETITIONS}",
        bench,
        argv,
    )


def bench(quick: bool, json_file: str | None) -> int:
    spec = importlib.util.find_spec("juncture")
    if spec is None or spec.origin is None:
        raise BenchError(f"juncture cannot be imported by {sys.executable}: run this with its virtualenv", 2)
    if sshd_binary() is None:
        raise BenchError("sshd not found (Debian package openssh-server)", 2)
    missing = podman_missing()
    if missing:
        raise BenchError(f"cannot run containers, missing: {', '.join(missing)}", 2)
    root = tempfile.mkdtemp(prefix="juncture-bench-")
    server: SshServer | None = None
    podman: Podman | None = None
    try:
        server = start_sshd(os.path.join(root, "sshd"))
        podman = start_podman(os.path.join(root, "podman"))
        podman.run(CONTAINER)
        project = make_project(root, server)
        return measure(os.path.dirname(spec.origin), project, podman, quick, json_file)
    finally:
        if server is not None:
            server.stop()
        if podman is not None:
            podman.reset()
        shutil.rmtree(root, ignore_errors=True)


def measure(package: str, project: str, podman: Podman, quick: bool, json_file: str | None) -> int:
    repetitions = QUICK_REPETITIONS if quick else REPETITIONS
    env = podman.environ()
    print(f"juncture {package}, Python {platform.python_version()}, {platform.platform()}")
    print(
        f"One hook printing {SIZE / 1e9:g} GB (`yes LINE | head -c {SIZE}`) against the same hook with its "
        f"output sent to /dev/null, {repetitions} repetition(s) each, interleaved; peak RSS of the "
        "juncture process with the children it waited for (wait4), and alone (RUSAGE_SELF).\n"
    )
    figures = ("tree", "alone")
    samples: dict[str, dict[str, dict[str, list[int]]]] = {}
    seconds: dict[str, list[float]] = {}
    for name, stage in TARGETS.items():
        samples[name] = {kind: {figure: [] for figure in figures} for kind in ("silent", "loud")}
        for rep in range(repetitions):
            for kind in ("silent", "loud") if rep % 2 == 0 else ("loud", "silent"):
                event = f"{kind}-{stage}"
                started = time.time() - 1
                tree, alone, elapsed = peak_rss(["-C", project, "fire", event, "--stage", stage, "-q"], env)
                samples[name][kind]["tree"].append(tree)
                samples[name][kind]["alone"].append(alone)
                if kind == "loud":
                    seconds.setdefault(name, []).append(elapsed)
                    check_log(project, event, started)

    results: dict[str, Any] = {}
    for name in TARGETS:
        wall = statistics.median(seconds[name])
        print(f"  {name} (loud run {wall:.1f} s, {SIZE / 1e6 / wall:.0f} MB/s into the log file):")
        results[name] = {"loud_seconds": seconds[name]}
        for figure, label in (("tree", "with children"), ("alone", "juncture alone")):
            silent = statistics.median(samples[name]["silent"][figure])
            loud = statistics.median(samples[name]["loud"][figure])
            growth = loud - silent
            ok = verdict(growth / 1e6, TARGET_MB)
            print(
                f"    {label:<15} silent {mb(silent):>6} MB, loud {mb(loud):>6} MB: "
                f"growth {mb(growth):>6} MB   target <= {TARGET_MB:g} MB  {ok}"
            )
            results[name][figure] = {
                "silent_bytes": samples[name]["silent"][figure],
                "loud_bytes": samples[name]["loud"][figure],
                "growth_bytes": growth,
                "target": f"<= {TARGET_MB:g} MB",
                "verdict": ok,
            }

    if json_file:
        report = {
            "juncture": package,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "quick": quick,
            "size_bytes": SIZE,
            "repetitions": repetitions,
            "targets": results,
        }
        write_report(json_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
