"""Benchmark: `juncture fire --stage` over SSH fan-out against a bare asyncssh script (and parallel-ssh).

One run starts a private OpenSSH sshd on 127.0.0.1 (`tests/servers.py`, with `MaxStartups 400:30:800`,
`MaxSessions 200` and `SetEnv SHLVL=1`, so bash skips root's ~/.bashrc), makes N "hosts" that are names
for that one sshd, and measures, with medians of interleaved repetitions, the whole-process wall time of

* `juncture -C PROJECT fire ping --stage fleet -q`: one hook (`#!/bin/sh\\ntrue`) on each of 50 hosts;
* the same with 10 hooks per host (`ping.d/01-true` .. `10-true`), in a project of its own;
* `python asyncssh_peer.py`: the least a Python tool can do for the first case, one
  `asyncssh.connect` per host (all at once, `asyncio.gather`), `conn.run("true")`, close;
* `python pssh_peer.py`: parallel-ssh's `ParallelSSHClient.run_command("true")` on the 50 hosts, when it
  is installed in its own virtualenv (`BENCH_INSTALL_PEERS=1` installs it there);
* `juncture fire ping --stage fleet200` on 200 hosts (and the asyncssh script on 200), fewer repetitions.

and reports juncture/asyncssh, the cost of one more hook run on a connected host, `(T10 - T1) / (9 * 50)`,
and `T10 / (10 * 50)`, against their targets.

It is a measurement, not a test: it prints PASS/MISS next to each target and exits 0 (2 when juncture,
sshd or asyncssh cannot be found, 1 when a sanity check or a timed command fails).

    python bench/fanout_vs_asyncssh.py [--quick] [--json FILE]
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from timing import (
    BenchError,
    Command,
    cpu_busy,
    find_juncture,
    ms,
    num,
    ratio,
    run_main,
    spread,
    time_interleaved,
    usable_cpus,
    verdict,
    write_report,
)

# tests/ is not a package: its servers module (the sshd fixture) is imported from the path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from servers import SshServer, sshd_binary, start_sshd

HOSTS = 50
BIG_HOSTS = 200
HOOKS = 10
REPETITIONS = 7
QUICK_REPETITIONS = 3
BIG_REPETITIONS = 3
QUICK_BIG_REPETITIONS = 1
MAX_STARTUPS = "400:30:800"
MAX_SESSIONS = 200
STAGE = "fleet"
BIG_STAGE = "fleet200"
EVENT = "ping"

PSSH_VENV = os.environ.get("BENCH_PSSH_VENV", "/tmp/bench-pssh-venv")
PSSH_PACKAGE = "parallel-ssh"

TARGET_RATIO = 1.15  # juncture / asyncssh, one hook on 50 hosts: at most
TARGET_PER_HOOK_MS = 3.0  # (T10 - T1) / (9 * 50): at most

J1 = "juncture 1 hook"
J10 = f"juncture {HOOKS} hooks"
ASYNCSSH = "asyncssh gather"
PSSH = "parallel-ssh"
J200 = f"juncture {BIG_HOSTS} hosts"
ASYNCSSH200 = f"asyncssh {BIG_HOSTS} hosts"
PSSH200 = f"parallel-ssh {BIG_HOSTS}"

HOOK = "#!/bin/sh\ntrue\n"

# The peer: what a hand-written asyncssh fan-out does, nothing more. Exits 1 unless every host ran `true`.
ASYNCSSH_PEER = """\
import asyncio
import sys

import asyncssh

PORT, KEY, KNOWN_HOSTS, COUNT = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])


async def one():
    conn = await asyncssh.connect("127.0.0.1", port=PORT, client_keys=[KEY], known_hosts=KNOWN_HOSTS)
    try:
        return (await conn.run("true")).exit_status
    finally:
        conn.close()
        await conn.wait_closed()


async def main():
    codes = await asyncio.gather(*(one() for _ in range(COUNT)))
    failed = sum(code != 0 for code in codes)
    if failed:
        sys.exit(f"{failed} of {COUNT} hosts did not run true")
    print(f"{COUNT} ok")


asyncio.run(main())
"""

# parallel-ssh (libssh2 through ssh2-python, gevent): one client for all hosts. It checks no host keys.
PSSH_PEER = """\
import getpass
import sys

from pssh.clients import ParallelSSHClient

PORT, KEY, COUNT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
client = ParallelSSHClient(
    ["127.0.0.1"] * COUNT, port=PORT, pkey=KEY, user=getpass.getuser(), pool_size=COUNT, num_retries=3
)
output = client.run_command("true")
client.join(output)
failed = [host for host in output if host.exit_code != 0]
if failed:
    sys.exit(f"{len(failed)} of {COUNT} hosts did not run true: {failed[0].exception}")
print(f"{COUNT} ok")
"""

CONFIG = """\
app: bench
events:
  {event}: {{audience: hosts}}
stages:
{stages}"""

STAGE_CONFIG = """\
  {name}:
    deploy_to: /tmp/x/{{{{ host.name }}}}
    ssh: {{port: {port}, identity_file: {key}, known_hosts_file: {known_hosts}}}
    hosts:
{hosts}
"""

SUMMARY = re.compile(r"event (\S+): (\d+) hook run\(s\) on (\d+) target\(s\), (\d+) failed")


# -- finding the tools --------------------------------------------------------------------------------


def find_sshd() -> str:
    sshd = sshd_binary()
    if sshd is None:
        raise BenchError("sshd not found (Debian package openssh-server)", 2)
    return sshd


def check_asyncssh(python: str) -> str:
    found = subprocess.run(
        [python, "-c", "import asyncssh; print(asyncssh.__version__)"], capture_output=True, text=True
    )
    if found.returncode != 0:
        raise BenchError(f"{python} cannot import asyncssh: {found.stderr.strip()[-500:]}", 2)
    return found.stdout.strip()


def pssh_python(root: str) -> tuple[str | None, str]:
    """The Python of the parallel-ssh virtualenv and its version, or None and why not.

    With BENCH_INSTALL_PEERS=1 a missing virtualenv is made and parallel-ssh pip-installed into it.
    """
    python = os.path.join(PSSH_VENV, "bin", "python")
    if not os.path.exists(python) and os.environ.get("BENCH_INSTALL_PEERS") == "1":
        print(f"installing {PSSH_PACKAGE} into {PSSH_VENV} (BENCH_INSTALL_PEERS=1) ...", flush=True)
        steps = [
            [sys.executable, "-m", "venv", PSSH_VENV],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PSSH_PACKAGE],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(PSSH_VENV, ignore_errors=True)
                return None, f"not installed (`{' '.join(step)}` failed: {done.stderr.strip()[-300:]})"
    if not os.path.exists(python):
        return None, f"not installed (no {PSSH_VENV}; BENCH_INSTALL_PEERS=1 installs it)"
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('parallel-ssh'))"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        return None, f"not installed ({python} has no parallel-ssh)"
    return python, found.stdout.strip()


# -- building the project -----------------------------------------------------------------------------


def stage_config(name: str, hosts: int, server: SshServer) -> str:
    width = len(str(hosts - 1))
    lines = "\n".join(f"      - {{name: h{i:0{width}d}, address: 127.0.0.1}}" for i in range(hosts))
    return STAGE_CONFIG.format(
        name=name,
        port=server.port,
        # A JSON string is a YAML string: quoted, whatever the temporary path holds.
        key=json.dumps(server.client_key),
        known_hosts=json.dumps(server.known_hosts),
        hosts=lines,
    )


def make_project(root: str, name: str, hooks: int, stages: dict[str, int], server: SshServer) -> str:
    """`root/name`: `juncture.yaml` with the stages {name: host count}, and `hooks` hooks in ping.d."""
    project = os.path.join(root, name)
    directory = os.path.join(project, ".juncture", "hooks", f"{EVENT}.d")
    os.makedirs(directory)
    with open(os.path.join(project, "juncture.yaml"), "w", encoding="utf-8") as handle:
        stage_text = "".join(stage_config(stage, count, server) for stage, count in stages.items())
        handle.write(CONFIG.format(event=EVENT, stages=stage_text))
    for i in range(1, hooks + 1):
        path = os.path.join(directory, "10-true" if hooks == 1 else f"{i:02d}-true")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(HOOK)
        os.chmod(path, 0o755)
    return project


def write_peer(root: str, name: str, text: str) -> str:
    path = os.path.join(root, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


# -- sanity checks ------------------------------------------------------------------------------------


def check_fire(juncture: str, project: str, stage: str, hooks: int, hosts: int) -> str:
    """One untimed `fire` without -q: exit 0 and the summary line must count hooks x hosts runs, 0 failed.

    Returns juncture's own figure for the run, as its summary prints it (`1.2 s`), or "?".
    """
    argv = [juncture, "-C", project, "fire", EVENT, "--stage", stage]
    done = subprocess.run(argv, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    found = SUMMARY.search(output)
    expected = (EVENT, str(hooks * hosts), str(hosts), "0")
    if done.returncode != 0 or found is None or found.groups() != expected:
        raise BenchError(
            f"`{' '.join(argv)}` exited {done.returncode}; expected the summary `event {EVENT}: "
            f"{hooks * hosts} hook run(s) on {hosts} target(s), 0 failed`, got: "
            f"{found.group(0) if found else '(no summary line)'}\n{output[-2000:]}"
        )
    took = re.match(r" in ([\d.]+ m?s)\b", output[found.end() :])
    return took.group(1) if took else "?"


def check_peer(name: str, argv: list[str], hosts: int) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0 or done.stdout.strip() != f"{hosts} ok":
        raise BenchError(
            f"{name}: `{' '.join(argv)}` exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}"
        )


def environment_notes() -> list[str]:
    """Facts about this machine that move the figures, printed with them."""
    notes = []
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        notes.append(
            f"the CPUs were {busy:.0%} busy just before the run: other processes add noise to every figure"
        )
    spec = importlib.util.find_spec("juncture")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and locations:
        stale = uncompiled_modules(locations[0])
        if stale:
            shown = ", ".join(stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
            notes.append(
                f"PYTHONDONTWRITEBYTECODE is set and {len(stale)} juncture module(s) have no up-to-date "
                f".pyc ({shown}): every juncture run compiles them from source, which inflates its time"
            )
    return notes


def uncompiled_modules(package: str) -> list[str]:
    """The package's modules (relative paths) whose __pycache__ .pyc is missing or older than the source."""
    tag = sys.implementation.cache_tag
    stale = []
    for directory, subdirs, files in os.walk(package):
        subdirs[:] = [d for d in subdirs if d not in ("__pycache__", "samples")]
        for name in files:
            if not name.endswith(".py"):
                continue
            source = os.path.join(directory, name)
            compiled = os.path.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            if not os.path.exists(compiled) or os.path.getmtime(compiled) < os.path.getmtime(source):
                stale.append(os.path.relpath(source, package))
    return sorted(stale)


# -- the report ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        "fanout_vs_asyncssh",
        "Time juncture's SSH fan-out against a bare asyncssh script and parallel-ssh (medians).",
        f"{QUICK_REPETITIONS} repetitions instead of {REPETITIONS} ({QUICK_BIG_REPETITIONS} for 200 hosts)",
        bench,
        argv,
    )


def bench(quick: bool, json_file: str | None) -> int:
    juncture = find_juncture()
    find_sshd()
    python = sys.executable
    version = check_asyncssh(python)
    root = tempfile.mkdtemp(prefix="juncture-bench-")
    server: SshServer | None = None
    try:
        server = start_sshd(
            os.path.join(root, "sshd"), max_startups=MAX_STARTUPS, max_sessions=MAX_SESSIONS, quiet_shell=True
        )
        return measure(juncture, python, version, server, root, quick, json_file)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure(
    juncture: str,
    python: str,
    asyncssh_version: str,
    server: SshServer,
    root: str,
    quick: bool,
    json_file: str | None,
) -> int:
    repetitions = QUICK_REPETITIONS if quick else REPETITIONS
    big_repetitions = QUICK_BIG_REPETITIONS if quick else BIG_REPETITIONS
    pssh, pssh_version = pssh_python(root)
    print(f"juncture:  {juncture}")
    print(f"python:    {python} ({platform.python_version()}), asyncssh {asyncssh_version}")
    print(f"peer:      parallel-ssh {pssh_version}" + (f" ({pssh})" if pssh else ""))
    cpus = usable_cpus()
    load = os.getloadavg()[0]
    print(
        f"machine:   {platform.platform()}, {cpus} usable CPU(s), load average {load:.2f}"
        f"{', --quick' if quick else ''}"
    )
    print(
        f"sshd:      127.0.0.1:{server.port} (pid {server.pid}), MaxStartups {MAX_STARTUPS}, "
        f"MaxSessions {MAX_SESSIONS}, SetEnv SHLVL=1"
    )
    notes = environment_notes()
    for note in notes:
        print(f"note:      {note}")

    one = make_project(root, "one", 1, {STAGE: HOSTS, BIG_STAGE: BIG_HOSTS}, server)
    ten = make_project(root, "ten", HOOKS, {STAGE: HOSTS}, server)
    asyncssh_peer = write_peer(root, "asyncssh_peer.py", ASYNCSSH_PEER)
    pssh_peer = write_peer(root, "pssh_peer.py", PSSH_PEER)

    def fire(project: str, stage: str) -> Command:
        return [juncture, "-C", project, "fire", EVENT, "--stage", stage, "-q"], None

    def by_asyncssh(hosts: int) -> Command:
        argv = [python, asyncssh_peer, str(server.port), server.client_key, server.known_hosts, str(hosts)]
        return argv, None

    def by_pssh(hosts: int) -> Command:
        assert pssh is not None
        return [pssh, pssh_peer, str(server.port), server.client_key, str(hosts)], None

    commands: dict[str, Command] = {J1: fire(one, STAGE), ASYNCSSH: by_asyncssh(HOSTS)}
    if pssh:
        commands[PSSH] = by_pssh(HOSTS)
    commands[J10] = fire(ten, STAGE)
    big: dict[str, Command] = {J200: fire(one, BIG_STAGE), ASYNCSSH200: by_asyncssh(BIG_HOSTS)}
    if pssh:
        big[PSSH200] = by_pssh(BIG_HOSTS)
    print(f"command:   {' '.join(commands[J1][0]).replace(root, 'TMP')}")
    print()

    # Every tool once, checked, before anything is timed: the right number of runs, nothing failed.
    own = {
        J1: check_fire(juncture, one, STAGE, 1, HOSTS),
        J10: check_fire(juncture, ten, STAGE, HOOKS, HOSTS),
        J200: check_fire(juncture, one, BIG_STAGE, 1, BIG_HOSTS),
    }
    for name, hosts, command in (
        (ASYNCSSH, HOSTS, commands[ASYNCSSH]),
        (ASYNCSSH200, BIG_HOSTS, big[ASYNCSSH200]),
        *(((PSSH, HOSTS, commands[PSSH]), (PSSH200, BIG_HOSTS, big[PSSH200])) if pssh else ()),
    ):
        check_peer(name, command[0], hosts)
    print(
        f"checked:   juncture ran {HOSTS}, {HOOKS * HOSTS} and {BIG_HOSTS} hook runs, 0 failed "
        f"(its summary lines: in {own[J1]}, {own[J10]} and {own[J200]}); "
        "every peer ran `true` on every host"
    )
    print()

    samples = time_interleaved(commands, repetitions)
    big_samples = time_interleaved(big, big_repetitions)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    big_medians = {name: statistics.median(values) for name, values in big_samples.items()}

    print(f"Median wall time in ms (min..max in brackets), {repetitions} reps each, interleaved")
    print(f"  {HOSTS} hosts, one `true` each:")
    for name in (J1, ASYNCSSH, PSSH):
        if name in medians:
            print(f"    {name:<22}{ms(medians[name]):>10}  [{spread(samples[name])}]")
        else:
            print(f"    {name:<22}{'n/a':>10}  {pssh_version}")
    print(f"  {HOSTS} hosts, {HOOKS} hooks each:")
    print(f"    {J10:<22}{ms(medians[J10]):>10}  [{spread(samples[J10])}]")
    print(
        f"  {BIG_HOSTS} hosts, one `true` each ({big_repetitions} rep{'s' if big_repetitions != 1 else ''} each, interleaved):"
    )
    for name in (J200, ASYNCSSH200, PSSH200):
        if name in big_medians:
            print(f"    {name:<22}{ms(big_medians[name]):>10}  [{spread(big_samples[name])}]")
        else:
            print(f"    {name:<22}{'n/a':>10}  {pssh_version}")

    fanout_ratio = ratio(medians[J1], medians[ASYNCSSH])
    per_hook = (medians[J10] - medians[J1]) / ((HOOKS - 1) * HOSTS)
    per_run = medians[J10] / (HOOKS * HOSTS)
    big_ratio = ratio(big_medians[J200], big_medians[ASYNCSSH200])
    print()
    print(
        f"Ratio juncture/asyncssh ({HOSTS} hosts): {ms(medians[J1])} / {ms(medians[ASYNCSSH])} ms = "
        f"{num(fanout_ratio)}   target <= {TARGET_RATIO:g}  {verdict(fanout_ratio, TARGET_RATIO)}"
    )
    print(
        f"Per extra hook run, (T{HOOKS} - T1) / ({HOOKS - 1} * {HOSTS}): {ms(per_hook)} ms"
        f"   target <= {TARGET_PER_HOOK_MS:g} ms  {verdict(per_hook * 1000, TARGET_PER_HOOK_MS)}"
    )
    print(f"Per hook run overall, T{HOOKS} / ({HOOKS} * {HOSTS}): {ms(per_run)} ms")
    print(
        f"{BIG_HOSTS} hosts: juncture exits 0 with {BIG_HOSTS} hook runs in {ms(big_medians[J200])} ms; "
        f"ratio to asyncssh {num(big_ratio)}"
    )
    if pssh:
        print(
            f"For context, juncture/parallel-ssh: {num(ratio(medians[J1], medians[PSSH]))} ({HOSTS} hosts), "
            f"{num(ratio(big_medians[J200], big_medians[PSSH200]))} ({BIG_HOSTS} hosts)"
        )

    if json_file:
        report: dict[str, Any] = {
            "tools": {
                "juncture": juncture,
                "python": python,
                "asyncssh": asyncssh_version,
                "parallel_ssh": pssh_version if pssh else None,
            },
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "usable_cpus": cpus,
            "load_average_at_start": load,
            "notes": notes,
            "quick": quick,
            "unit": "seconds",
            "hosts": HOSTS,
            "hooks": HOOKS,
            "big_hosts": BIG_HOSTS,
            "repetitions": repetitions,
            "big_repetitions": big_repetitions,
            "samples": {**samples, **big_samples},
            "median": {**medians, **big_medians},
            "juncture_own_summary": own,
            "per_extra_hook_run": per_hook,
            "per_hook_run_overall": per_run,
            "targets": {
                "juncture_asyncssh_ratio": {
                    "value": fanout_ratio,
                    "target": f"<= {TARGET_RATIO:g}",
                    "verdict": verdict(fanout_ratio, TARGET_RATIO),
                },
                "per_extra_hook_run_ms": {
                    "value": per_hook * 1000,
                    "target": f"<= {TARGET_PER_HOOK_MS:g}",
                    "verdict": verdict(per_hook * 1000, TARGET_PER_HOOK_MS),
                },
            },
        }
        write_report(json_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
