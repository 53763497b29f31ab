"""A hook that prints a lot does not grow juncture's memory, on an SSH host and in a Podman container: its
output streams to the log file as it arrives, and when juncture cannot keep up the host is made to wait
(SSH flow control) rather than its output piling up in memory.

Each measured run is a fresh process (juncture's `main()` in a small wrapper), so its peak RSS is its own:
`os.wait4` gives the process with the children it waited for (as `getrusage(RUSAGE_CHILDREN)` of a
wrapper would), the wrapper's `RUSAGE_SELF` juncture alone (the `podman exec` client, a child of
juncture, is bigger than juncture without asyncssh). bench/memory_output.py measures 1 GB the same way.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import Podman, SshServer

# Bytes the loud hook prints: enough that the host case failed every time before the fix (+46 to +172 MB
# at 300 MB, growing with the output; +12 to +15 MB after, at 200 and 300 MB).
SIZE = {"host": 300_000_000, "box": 200_000_000}
BOUND = 40_000_000  # peak RSS, loud run minus silent run: at most
LINE = "a line of output from a hook, long enough to look like a line of a real log: 80 chars"
CONTAINER = "juncture-test-memory"

# juncture's `main()`, then its own peak RSS (KiB) as the last line on stderr.
WRAPPER = """\
import os, resource, sys
from juncture.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
os.write(2, b"\\npeak-rss %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
os._exit(code)
"""


def configure(project: ProjectDir, server: SshServer, container: bool) -> None:
    """Stage `host` (one host on `server`) and stage `box` (one container); events loud-X and silent-X
    whose hook prints SIZE[X] bytes, or the same bytes to /dev/null."""
    events: dict[str, Any] = {}
    for audience, stage in (("hosts", "host"), ("container:memory", "box")):
        for kind, sink in (("loud", ""), ("silent", " > /dev/null")):
            events[f"{kind}-{stage}"] = {"audience": audience, "timeout": 120}
            text = f"#!/bin/sh\nyes '{LINE}' | head -c {SIZE[stage]}{sink}\n"
            project.hook(f"{kind}-{stage}", "10-print", text)
    stages: dict[str, Any] = {
        "host": {
            "deploy_to": str(project.root.parent / "deployed"),
            "hosts": [{"name": "h1", "address": "127.0.0.1"}],
            "ssh": server.ssh_options(),
        }
    }
    if container:
        stages["box"] = {
            "deploy_to": str(project.root.parent / "deployed"),
            "containers": [{"name": CONTAINER, "kind": "memory"}],
        }
    project.config(json.dumps({"app": "shop", "events": events, "stages": stages}, indent=1) + "\n")


def peak_rss(
    project: ProjectDir, event: str, stage: str, env: dict[str, str] | None = None
) -> tuple[int, int]:
    """Peak RSS in bytes of one fresh juncture run (fire EVENT --stage STAGE -q): with its children, alone."""
    argv = [sys.executable, "-c", WRAPPER, "-C", str(project.root), "fire", event, "--stage", stage, "-q"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read().decode("utf-8", "replace").strip()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    last = errors.rpartition("\n")[2]
    assert process.returncode == 0 and last.startswith("peak-rss "), errors[-2000:]
    return usage.ru_maxrss * 1024, int(last.split()[1]) * 1024


def log_sizes(project: ProjectDir) -> list[int]:
    pattern = str(project.root / ".juncture" / "logs" / "**" / "*.log")
    return sorted(os.path.getsize(path) for path in glob.glob(pattern, recursive=True))


def assert_bounded(project: ProjectDir, stage: str, env: dict[str, str] | None = None) -> None:
    silent = peak_rss(project, f"silent-{stage}", stage, env)
    loud = peak_rss(project, f"loud-{stage}", stage, env)
    # Every byte reached the log file, as it arrived.
    assert SIZE[stage] in log_sizes(project)
    for figure, before, after in zip(("with children", "alone"), silent, loud, strict=True):
        assert after - before <= BOUND, (
            f"{stage}: {SIZE[stage] / 1e6:g} MB of output grew juncture's peak RSS ({figure}) from "
            f"{before / 1e6:.1f} MB to {after / 1e6:.1f} MB"
        )


def test_output_of_a_hook_on_an_ssh_host_does_not_grow_junctures_memory(
    project: ProjectDir, sshd: SshServer
) -> None:
    configure(project, sshd, container=False)
    assert_bounded(project, "host")


def test_output_of_a_hook_in_a_container_does_not_grow_junctures_memory(
    project: ProjectDir, sshd: SshServer, podman: Podman
) -> None:
    configure(project, sshd, container=True)
    podman.run(CONTAINER)
    try:
        assert_bounded(project, "box", podman.environ())
    finally:
        podman.remove(CONTAINER)


def test_a_host_waits_for_a_slow_reader_instead_of_filling_junctures_memory(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    """`-v` into a pipe that is read slowly: juncture passes the pace on to the host. The hook records on
    the host how much it has printed; that never runs far ahead of what the reader has taken."""
    progress = tmp_path / "progress"
    configure(project, sshd, container=False)
    project.hook(
        "loud-host",
        "10-print",
        f"""\
        #!/bin/sh
        i=0
        while [ $i -lt 100 ]; do
          yes '{LINE}' | head -c 1000000
          i=$((i + 1))
          echo $i > {progress}
        done
        """,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "juncture",
            "-C",
            str(project.root),
            "fire",
            "loud-host",
            "--stage",
            "host",
            "-v",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    taken = ahead = 0
    try:
        until = time.monotonic() + 3
        while time.monotonic() < until:  # about 3 MB/s
            taken += len(os.read(process.stdout.fileno(), 65536))
            time.sleep(0.02)
            printed = int(progress.read_text() or 0) * 1_000_000 if progress.exists() else 0
            ahead = max(ahead, printed - taken)
        while os.read(process.stdout.fileno(), 1 << 20):
            pass
    finally:
        if process.poll() is None:
            process.kill()
        code = process.wait(30)
        errors = process.stderr.read().decode()
        process.stdout.close()
        process.stderr.close()
    assert code == 0, errors
    assert progress.read_text().strip() == "100"
    # What is between the hook and the reader: pipes, sshd's and the socket's buffers, the SSH window.
    assert ahead <= BOUND, f"the host printed {ahead / 1e6:.0f} MB more than the reader had taken"
