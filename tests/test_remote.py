"""`juncture fire EVENT --stage STAGE` on SSH hosts: audiences, selectors, the environment contract, host
keys, unreachable hosts, timeouts and a server that dies mid-run.

Every host is the session's loopback sshd (tests/servers.py), so a hook proves where it ran by writing a
file named after `$JUNCTURE_HOST`, and "the host" is this machine: its /proc shows what a hook left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import SshServer

STAGE = "fleet"


def host(name: str, *roles: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": "127.0.0.1", "roles": list(roles), **extra}


def ssh_options(server: SshServer, **extra: Any) -> dict[str, Any]:
    return server.ssh_options(connect_timeout=5, **extra)


def configure(
    project: ProjectDir,
    server: SshServer,
    hosts: list[dict[str, Any]],
    events: dict[str, Any],
    *,
    tasks: dict[str, Any] | None = None,
    ssh: dict[str, Any] | None = None,
    **stage: Any,
) -> None:
    """juncture.yaml (as JSON, which is YAML) with one stage `fleet` on `hosts` of `server`."""
    body: dict[str, Any] = {
        "app": "shop",
        "events": events,
        "stages": {
            STAGE: {
                "deploy_to": str(project.root.parent / "deployed" / "{{ host.name }}"),
                "hosts": hosts,
                "ssh": ssh if ssh is not None else ssh_options(server),
                **stage,
            }
        },
    }
    if tasks:
        body["tasks"] = tasks
    project.config(json.dumps(body, indent=1) + "\n")


def fire(
    project: ProjectDir, event: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return project.run("fire", event, "--stage", STAGE, *args, env=env, timeout=timeout)


def start(
    project: ProjectDir, event: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`fire` in the background, so that independent runs of a fixture overlap."""
    return subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", event, "--stage", STAGE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def seen(directory: Path, prefix: str) -> dict[str, str]:
    """{host: file content} of the files `<prefix>-<host>` that hooks wrote into `directory`."""
    return {
        p.name.removeprefix(f"{prefix}-"): p.read_text() for p in directory.glob(f"{prefix}-*") if p.is_file()
    }


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of this machine whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if marker in cmdline and state != "Z" and int(entry) != os.getpid():
            found.append((int(entry), cmdline))
    return found


def wait_until_gone(marker: str, seconds: float = 3.0) -> list[tuple[int, str]]:
    """The marked processes still there after up to `seconds` (signals are delivered asynchronously)."""
    deadline = time.monotonic() + seconds
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (by the /proc ppid chain), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- one five-host fleet, fired once per event: audiences, task selectors and hook headers -----------------

FIVE = [
    host("h1", "web"),
    host("h2", "web", "worker"),
    host("h3", "worker", primary=True),  # the primary is not the first host: `once` must pick it, not h1
    host("h4", "web"),
    host("h5", "worker"),
]
WEB = {"h1", "h2", "h4"}
WORKERS = {"h2", "h3", "h5"}


@dataclass
class FleetRun:
    out: Path  # where the hooks wrote their files
    ping: subprocess.CompletedProcess[str]
    webping: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def five_hosts(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> FleetRun:
    """Five hosts with roles web and worker; `ping` (audience hosts) and `webping` (role:web) fired once."""
    root = tmp_path_factory.mktemp("five")
    out = root / "out"
    out.mkdir()
    (root / "proj").mkdir()
    project = ProjectDir(root / "proj")
    configure(
        project,
        sshd,
        FIVE,
        {
            "ping": {"audience": "hosts", "timeout": 10, "grace": 1},
            "webping": {"audience": "role:web", "timeout": 10, "grace": 1},
        },
        tasks={
            "greet": {
                "run": f'echo "$JUNCTURE_ROLES" >> {out}/task-$JUNCTURE_HOST',
                "on": ["ping"],
                "roles": ["worker"],
            },
            "once-only": {"run": f"echo once >> {out}/once-$JUNCTURE_HOST", "on": ["ping"], "once": True},
        },
    )
    project.hook("ping", "10-seen", f'#!/bin/sh\necho "$JUNCTURE_HOST" >> {out}/ping-$JUNCTURE_HOST\n')
    project.hook(
        "ping",
        "20-workers",
        f"#!/bin/sh\n# juncture: roles=worker\necho w >> {out}/hdr-workers-$JUNCTURE_HOST\n",
    )
    project.hook("ping", "30-once", f"#!/bin/sh\n# juncture: once\necho o >> {out}/hdr-once-$JUNCTURE_HOST\n")
    project.hook(
        "ping",
        "40-worker-once",
        f"#!/bin/sh\n# juncture: roles=worker once\necho wo >> {out}/hdr-worker-once-$JUNCTURE_HOST\n",
    )
    project.hook("webping", "10-seen", f"#!/bin/sh\necho web >> {out}/web-$JUNCTURE_HOST\n")
    ping, webping = start(project, "ping"), start(project, "webping")
    return FleetRun(out, finish(ping), finish(webping))


def test_audience_hosts_runs_a_hook_once_on_every_host(five_hosts: FleetRun) -> None:
    assert five_hosts.ping.returncode == 0, five_hosts.ping.stderr
    assert seen(five_hosts.out, "ping") == {f"h{i}": f"h{i}\n" for i in range(1, 6)}


def test_task_with_roles_runs_only_on_hosts_with_that_role(five_hosts: FleetRun) -> None:
    assert five_hosts.ping.returncode == 0, five_hosts.ping.stderr
    tasks = seen(five_hosts.out, "task")
    assert set(tasks) == WORKERS
    assert tasks == {"h2": "web,worker\n", "h3": "worker\n", "h5": "worker\n"}


def test_once_task_runs_exactly_on_the_primary_host(five_hosts: FleetRun) -> None:
    assert five_hosts.ping.returncode == 0, five_hosts.ping.stderr
    assert seen(five_hosts.out, "once") == {"h3": "once\n"}


def test_audience_role_reaches_only_the_hosts_with_that_role(five_hosts: FleetRun) -> None:
    assert five_hosts.webping.returncode == 0, five_hosts.webping.stderr
    assert seen(five_hosts.out, "web") == dict.fromkeys(WEB, "web\n")
    assert "[h3]" not in five_hosts.webping.stdout and "[h5]" not in five_hosts.webping.stdout


def test_summary_counts_every_hook_run_and_target(five_hosts: FleetRun) -> None:
    # ping: 10-seen x5, 20-workers x3, 30-once x1, 40-worker-once x1, greet x3, once-only x1
    assert "event ping: 14 hook run(s) on 5 target(s), 0 failed" in five_hosts.ping.stdout
    for name in ("h1", "h2", "h3", "h4", "h5"):
        assert f"[{name}] ✓ ping/10-seen  " in five_hosts.ping.stdout


def test_hook_header_roles_limits_a_directory_hook_to_those_roles(five_hosts: FleetRun) -> None:
    assert seen(five_hosts.out, "hdr-workers") == dict.fromkeys(WORKERS, "w\n")


def test_hook_header_roles_and_once_runs_once_on_a_host_with_that_role(five_hosts: FleetRun) -> None:
    ran = seen(five_hosts.out, "hdr-worker-once")
    assert len(ran) == 1 and set(ran) <= WORKERS, ran


def test_hook_header_once_runs_on_the_primary_host_like_a_once_task(five_hosts: FleetRun) -> None:
    assert seen(five_hosts.out, "hdr-once") == {"h3": "o\n"}


# -- the environment contract on a host -------------------------------------------------------------------


def test_set_values_with_quotes_dollars_backslashes_and_newlines_arrive_byte_identical(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    value = 'it\'s "quoted" $HOME ${PATH} `id` $(id) \\back\\slash\\n \\\\ %s %b\nsecond line é\n\n'
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 10}})
    project.hook("ping", "10-q", f'#!/bin/sh\nprintf %s "$JUNCTURE_Q" > {tmp_path}/q-$JUNCTURE_HOST\n')
    done = fire(project, "ping", "--set", f"Q={value}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "q-h1").read_bytes() == value.encode()


def test_remote_hook_gets_the_contract_and_not_the_operators_environment(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    secret = f"xyz-{secrets.token_hex(8)}"
    configure(
        project, sshd, [host("h1", "web", "db"), host("h2")], {"ping": {"audience": "hosts", "timeout": 10}}
    )
    project.hook("ping", "10-env", f"#!/bin/sh\nenv > {tmp_path}/env-$JUNCTURE_HOST\n")
    done = fire(project, "ping", "--set", "color=blue", env={**os.environ, "SECRET_TOKEN": secret})
    assert done.returncode == 0, done.stderr
    for name, roles in (("h1", "web,db"), ("h2", "")):
        text = (tmp_path / f"env-{name}").read_text()
        assert "SECRET_TOKEN" not in text and secret not in text
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert env["JUNCTURE_HOST"] == name
        assert env["JUNCTURE_ROLES"] == roles
        assert env["JUNCTURE_HOSTS"] == "h1,h2"
        assert env["JUNCTURE_EVENT"] == "ping"
        assert env["JUNCTURE_STAGE"] == STAGE
        assert env["JUNCTURE_COLOR"] == "blue"


def test_python_hook_runs_on_the_host_by_its_shebang(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 10}})
    project.hook(
        "ping",
        "10-py",
        f"""\
        #!/usr/bin/env python3
        import os, sys
        with open("{tmp_path}/py-" + os.environ["JUNCTURE_HOST"], "w") as out:
            print(f"python {{sys.version_info.major}} on {{os.environ['JUNCTURE_HOST']}}", file=out)
        print("from python:", sys.argv[0].startswith("/tmp/juncture-"))
        """,
    )
    done = fire(project, "ping", "-v")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "py-h1").read_text() == "python 3 on h1\n"
    assert "[h1 10-py] from python: True" in done.stdout.splitlines()


def test_uploaded_hooks_are_private_files_removed_after_the_run(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    configure(project, sshd, [host("h1"), host("h2")], {"ping": {"audience": "hosts", "timeout": 10}})
    project.hook("ping", "10-where", f'#!/bin/sh\nstat -c "%a $0" "$0" > {tmp_path}/where-$JUNCTURE_HOST\n')
    done = fire(project, "ping")
    assert done.returncode == 0, done.stderr
    uploaded = []
    for name in ("h1", "h2"):
        mode, path = (tmp_path / f"where-{name}").read_text().split()
        assert mode == "600" and path.startswith("/tmp/juncture-")
        uploaded.append(Path(path))
    # Each host's worker shell removes its files when its input ends, as juncture disconnects.
    deadline = time.monotonic() + 5
    while any(p.exists() for p in uploaded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.exists() for p in uploaded)


def test_hooks_on_one_host_run_one_after_another_in_one_reused_session(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    """Each hook's parent is the host's worker shell: one session for all of them, not one each."""
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 10}})
    for index in range(1, 4):
        project.hook("ping", f"{index}0-parent", f"#!/bin/sh\necho $PPID >> {tmp_path}/parents\n")
    done = fire(project, "ping")
    assert done.returncode == 0, done.stderr
    parents = (tmp_path / "parents").read_text().split()
    assert len(parents) == 3 and len(set(parents)) == 1


def test_after_a_remote_timeout_the_next_hook_on_that_host_still_runs(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 1, "grace": 1, "failure": "continue"}},
    )
    project.hook("ping", "10-hang", f'#!/bin/sh\necho "$0" > {tmp_path}/hang-file\nsleep 30\n')
    project.hook("ping", "20-after", f"#!/bin/sh\necho after > {tmp_path}/after\n")
    done = fire(project, "ping")
    assert done.returncode == 0, done.stderr
    assert "[h1] ✗ ping/10-hang  timed out after 1 s" in done.stdout
    assert (tmp_path / "after").read_text() == "after\n"
    assert not Path((tmp_path / "hang-file").read_text().strip()).exists()


# -- output: one two-host project fired three ways at once ------------------------------------------------


@dataclass
class Outputs:
    normal: subprocess.CompletedProcess[str]
    verbose: subprocess.CompletedProcess[str]
    json: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def outputs(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """h1 and h2 run 10-hello; 20-fail exits 7 on h2 only. Fired plain, with -v and with --json."""
    root = tmp_path_factory.mktemp("outputs")
    project = ProjectDir(root)
    configure(project, sshd, [host("h1"), host("h2")], {"ping": {"audience": "hosts", "timeout": 10}})
    project.hook("ping", "10-hello", '#!/bin/sh\necho "hello from $JUNCTURE_HOST"\n')
    project.hook(
        "ping", "20-fail", '#!/bin/sh\necho "oops on $JUNCTURE_HOST"\n[ "$JUNCTURE_HOST" != h2 ] || exit 7\n'
    )
    runs = [start(project, "ping", *extra) for extra in ((), ("-v",), ("--json",))]
    return Outputs(*(finish(run) for run in runs))


def test_terminal_lines_are_prefixed_with_the_host(outputs: Outputs) -> None:
    lines = outputs.normal.stdout.splitlines()
    for name in ("h1", "h2"):
        assert any(line.startswith(f"[{name}] ✓ ping/10-hello  ") and line.endswith(" ms") for line in lines)
    assert any(line.startswith("[h1] ✓ ping/20-fail  ") for line in lines)
    assert "hello from" not in outputs.normal.stdout  # only a failed hook's output is shown


def test_verbose_streams_output_lines_prefixed_with_host_and_hook(outputs: Outputs) -> None:
    lines = outputs.verbose.stdout.splitlines()
    for name in ("h1", "h2"):
        assert f"[{name}] → ping/10-hello" in lines
        assert f"[{name} 10-hello] hello from {name}" in lines
        assert f"[{name} 20-fail] oops on {name}" in lines


def test_failing_hook_exits_1_and_names_its_host(outputs: Outputs) -> None:
    done = outputs.normal
    assert done.returncode == 1
    assert done.stderr.startswith("juncture: [h2] event ping aborted: "), done.stderr
    assert "20-fail exited with code 7" in done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("[h2] ✗ ping/20-fail  exited with code 7  ") for line in lines)
    assert "    oops on h2" in lines
    assert "event ping: 4 hook run(s) on 2 target(s), 1 failed" in done.stdout
    assert outputs.verbose.returncode == 1 and outputs.json.returncode == 1


def test_json_hook_lines_carry_the_host_they_ran_on(outputs: Outputs) -> None:
    hook_lines = [obj for obj in json_lines(outputs.json.stdout) if obj["type"].startswith("hook-")]
    assert {(obj["type"], obj["host"]) for obj in hook_lines} == {
        (kind, name) for kind in ("hook-start", "hook-output", "hook-end") for name in ("h1", "h2")
    }
    ends = {
        (obj["host"], obj["hook"]): (obj["status"], obj["exit_code"])
        for obj in hook_lines
        if obj["type"] == "hook-end"
    }
    assert ends == {
        ("h1", "ping/10-hello"): ("ok", 0),
        ("h1", "ping/20-fail"): ("ok", 0),
        ("h2", "ping/10-hello"): ("ok", 0),
        ("h2", "ping/20-fail"): ("failed", 7),
    }
    for obj in hook_lines:
        if obj["type"] == "hook-output":
            assert obj["line"] in (f"hello from {obj['host']}", f"oops on {obj['host']}")
        if obj["type"] == "hook-end":
            assert f"/{obj['host']}/" in obj["log"]


def test_json_run_lines_carry_the_host_too(outputs: Outputs) -> None:
    """Each host's run starts and ends on its own line; without its host, a failed run-end names none."""
    objs = json_lines(outputs.json.stdout)
    assert all("host" in obj for obj in objs), [obj["type"] for obj in objs if "host" not in obj]
    ends = {obj["host"]: obj["status"] for obj in objs if obj["type"] == "run-end"}
    assert ends == {"h1": "ok", "h2": "failed"}


# -- timeouts ----------------------------------------------------------------------------------------------


def test_timeout_kills_the_hooks_whole_process_group_on_the_host(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    marker = f"{300 + secrets.randbelow(100)}.{secrets.randbelow(10**9):09d}"  # sleep takes fractions
    pid_file = tmp_path / "hook.pid"
    configure(project, sshd, [host("h1")], {"ping": {"audience": "hosts", "timeout": 1, "grace": 1}})
    project.hook("ping", "10-hang", f"#!/bin/sh\nsleep {marker} &\necho $$ > {pid_file}\nsleep 1{marker}\n")
    started = time.monotonic()
    proc = start(project, "ping")
    try:
        deadline = time.monotonic() + 10
        while len(marked_processes(marker)) < 2:  # both sleeps run here: the scan sees them
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hook's sleeps never showed up"
            time.sleep(0.02)
        hook_pid = int(pid_file.read_text())
        done = finish(proc)
        elapsed = time.monotonic() - started
        assert done.returncode == 1
        assert done.stderr.startswith("juncture: [h1] event ping aborted: "), done.stderr
        assert "timed out after 1 s" in done.stderr
        assert "[h1] ✗ ping/10-hang  timed out after 1 s" in done.stdout
        assert elapsed < 10
        assert wait_until_gone(marker) == []  # neither the background sleep nor the foreground one
        assert _gone(hook_pid)  # nor the hook's shell
    finally:
        for pid, _ in marked_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """True when `pid` does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- host keys -------------------------------------------------------------------------------------------


def test_changed_host_key_is_refused_naming_the_host_and_its_fingerprint(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, known_hosts_file=sshd.wrong_known_hosts()),
    )
    project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    done = fire(project, "ping")
    assert done.returncode == 1
    assert "h1" in done.stderr
    assert "HOST KEY CHANGED" in done.stderr
    assert sshd.host_key_fingerprint in done.stderr  # "SHA256:..." of the key the server offers
    assert not (tmp_path / "ran").exists()
    assert "✓" not in done.stdout


def test_unknown_host_key_is_refused_in_strict_mode(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, known_hosts_file=str(known), known_hosts="strict"),
    )
    project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    done = fire(project, "ping")
    assert done.returncode == 1
    assert "h1" in done.stderr and sshd.host_key_fingerprint in done.stderr
    assert not (tmp_path / "ran").exists()
    assert known.read_text() == ""


@pytest.mark.parametrize(
    ("key", "reason"), [("missing", "No such file or directory"), ("garbage", "Invalid")]
)
def test_an_identity_file_that_cannot_be_loaded_is_one_clear_error_before_any_connection(
    project: ProjectDir, sshd: SshServer, tmp_path: Path, key: str, reason: str
) -> None:
    identity = tmp_path / key
    if key == "garbage":
        identity.write_text("not a private key\n")
    configure(
        project,
        sshd,
        [host("h1"), host("h2")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, identity_file=str(identity)),
    )
    project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    done = fire(project, "ping")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"juncture: error: ssh: identity_file {identity}: cannot load the key: {reason}"
    )
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unreachable" not in done.stderr
    assert not (tmp_path / "ran").exists()


def test_accept_new_adds_an_unknown_host_key_to_known_hosts_and_runs(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, known_hosts_file=str(known), known_hosts="accept-new"),
    )
    project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran-$JUNCTURE_HOST\n")
    done = fire(project, "ping")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran-h1").exists()
    expected = Path(sshd.known_hosts).read_text().split()[:3]  # [127.0.0.1]:PORT ssh-ed25519 BLOB
    lines = known.read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [expected]
    # The file it wrote pins the key: a strict run now trusts the host.
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, known_hosts_file=str(known), known_hosts="strict"),
    )
    again = fire(project, "ping")
    assert again.returncode == 0, again.stderr
    assert known.read_text().splitlines() == lines


def test_accept_new_still_refuses_a_changed_host_key(
    project: ProjectDir, sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(Path(sshd.wrong_known_hosts()).read_text())
    before = known.read_text()
    configure(
        project,
        sshd,
        [host("h1")],
        {"ping": {"audience": "hosts", "timeout": 10}},
        ssh=ssh_options(sshd, known_hosts_file=str(known), known_hosts="accept-new"),
    )
    project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    done = fire(project, "ping")
    assert done.returncode == 1
    assert (
        "h1" in done.stderr and "HOST KEY CHANGED" in done.stderr and sshd.host_key_fingerprint in done.stderr
    )
    assert not (tmp_path / "ran").exists()
    assert known.read_text() == before


# -- unreachable hosts: abort and skip fired side by side -------------------------------------------------


@dataclass
class Unreachable:
    abort: subprocess.CompletedProcess[str]
    skip: subprocess.CompletedProcess[str]
    ran_abort: list[str]
    ran_skip: list[str]


@pytest.fixture(scope="module")
def unreachable(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Unreachable:
    """h1, down (a port nobody listens on) and h3; once with on_unreachable abort, once with skip."""
    runs = {}
    outs = {}
    for mode in ("abort", "skip"):
        root = tmp_path_factory.mktemp(f"unreachable-{mode}")
        outs[mode] = out = root / "out"
        out.mkdir()
        project = ProjectDir(root)
        configure(
            project,
            sshd,
            [host("h1"), host("down", port=closed_port(), primary=True), host("h3")],
            {"ping": {"audience": "hosts", "timeout": 10}},
            tasks={"once": {"run": f"touch {out}/task-once-$JUNCTURE_HOST", "on": ["ping"], "once": True}},
            on_unreachable=mode,
        )
        project.hook("ping", "10-touch", f"#!/bin/sh\ntouch {out}/ran-$JUNCTURE_HOST\n")
        project.hook(
            "ping", "20-once", f"#!/bin/sh\n# juncture: once\ntouch {out}/hook-once-$JUNCTURE_HOST\n"
        )
        runs[mode] = start(project, "ping")
    done = {mode: finish(run) for mode, run in runs.items()}
    ran = {mode: sorted(p.name for p in out.iterdir()) for mode, out in outs.items()}
    return Unreachable(done["abort"], done["skip"], ran["abort"], ran["skip"])


def test_unreachable_host_with_abort_runs_nothing_anywhere(unreachable: Unreachable) -> None:
    done = unreachable.abort
    assert done.returncode == 1
    assert "down" in done.stderr and "unreachable" in done.stderr
    assert "h1" not in done.stderr and "h3" not in done.stderr
    assert unreachable.ran_abort == []
    assert "✓" not in done.stdout


def test_unreachable_host_with_skip_runs_on_the_others_and_names_the_skipped_one(
    unreachable: Unreachable,
) -> None:
    done = unreachable.skip
    assert done.returncode == 3, done.stderr  # done on the reachable hosts, one skipped: CI notices
    assert [n for n in unreachable.ran_skip if n.startswith("ran-")] == ["ran-h1", "ran-h3"]
    assert "unreachable, skipped: down" in done.stdout
    assert "juncture: skipped down" in done.stderr
    assert "[down]" not in done.stdout


def test_once_moves_to_the_first_reachable_host_when_the_primary_is_skipped(
    unreachable: Unreachable,
) -> None:
    assert unreachable.skip.returncode == 3, unreachable.skip.stderr
    assert [n for n in unreachable.ran_skip if "once" in n] == ["hook-once-h1", "task-once-h1"]


# -- the server dies mid-run -------------------------------------------------------------------------------


@dataclass
class Killed:
    done: subprocess.CompletedProcess[str]
    seconds: float  # from the kill to juncture's exit
    finished: bool  # the hook's last line ran after all


@pytest.fixture(scope="module")
def sshd_killed(sshd: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    """A private sshd (the session's `sshd` only makes sure sshd exists) is killed, listener and every
    process serving the connection, one second into a 5 s hook; it and all it started are gone afterwards."""
    import servers

    root = tmp_path_factory.mktemp("killed")
    server = servers.start_sshd(str(root / "sshd"))
    try:
        project = ProjectDir(root / "proj")
        project.root.mkdir()
        marker = f"{5 + secrets.randbelow(4)}.{secrets.randbelow(10**9):09d}"
        started_file = root / "started"
        configure(project, server, [host("h1")], {"ping": {"audience": "hosts", "timeout": 30, "grace": 1}})
        project.hook(
            "ping", "10-slow", f"#!/bin/sh\ntouch {started_file}\nsleep {marker}\ntouch {root}/finished\n"
        )
        proc = start(project, "ping")
        try:
            deadline = time.monotonic() + 10
            while not started_file.exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the hook never started"
                time.sleep(0.02)
            time.sleep(1)
            killed_at = time.monotonic()
            for pid in [server.pid, *descendants(server.pid)]:  # monitor, session, the hook's shell and sleep
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            done = finish(proc, timeout=20)
            seconds = time.monotonic() - killed_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        yield Killed(done, seconds, (root / "finished").exists())
    finally:
        for pid in descendants(server.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stop()


def test_sshd_killed_mid_hook_fails_the_run_naming_the_host_without_hanging(sshd_killed: Killed) -> None:
    done = sshd_killed.done
    assert done.returncode == 1
    assert sshd_killed.seconds < 20
    assert done.stderr.startswith("juncture: [h1] event ping aborted: "), done.stderr
    assert "connection to h1 lost" in done.stderr
    assert "[h1] ✗ ping/10-slow" in done.stdout
    assert not sshd_killed.finished


def test_connection_lost_mid_hook_is_not_reported_as_could_not_start(sshd_killed: Killed) -> None:
    """The hook ran for a second before its host went away: "could not start" would tell the operator
    that it did nothing, when it may have done half its work."""
    assert "connection to h1 lost" in sshd_killed.done.stderr
    assert "could not start" not in sshd_killed.done.stderr + sshd_killed.done.stdout
