"""`juncture fire EVENT --stage STAGE` in Podman containers on this machine: an audience `container:KIND`
runs its hooks inside the containers of that kind, with the environment contract; a timeout kills the
hook's whole process group inside the container; a layer scoped to a container kind applies only there.

The containers come from tests/servers.py (busybox image, private Podman storage); juncture runs with
`podman.environ()` so that its own `podman exec` finds them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import Podman

STAGE = "boxes"
CONTAINERS = {"db1": "database", "pg1": "postgres", "maria1": "mariadb"}


@pytest.fixture(scope="module")
def boxes(podman: Podman) -> Iterator[Podman]:
    """db1 (kind database), pg1 (postgres) and maria1 (mariadb), running for this module."""
    try:
        for name, kind in CONTAINERS.items():
            podman.run(name, f"juncture.test.kind={kind}")
        yield podman
    finally:
        for name in CONTAINERS:
            podman.remove(name)


def configure(project: ProjectDir, events: dict[str, Any], **top: Any) -> None:
    """juncture.yaml (as JSON, which is YAML): stage `boxes` with the three containers and no hosts."""
    body = {
        "app": "shop",
        "events": events,
        "stages": {
            STAGE: {
                "deploy_to": str(project.root.parent / "deployed"),
                "containers": [{"name": name, "kind": kind} for name, kind in CONTAINERS.items()],
            }
        },
        **top,
    }
    project.config(json.dumps(body, indent=1) + "\n")


def fire(
    project: ProjectDir, podman: Podman, event: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return project.run("fire", event, "--stage", STAGE, *args, env={**podman.environ(), **(env or {})})


def inside(podman: Podman, name: str, script: str) -> str:
    done = podman.exec(name, "sh", "-c", script)
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done.stdout


def uploads_left(podman: Podman, name: str) -> list[str]:
    """The run directories juncture left in a container's /tmp."""
    return inside(podman, name, "ls -d /tmp/juncture-* 2>/dev/null; true").split()


def test_container_audience_runs_hooks_inside_the_container_with_the_contract(
    project: ProjectDir, boxes: Podman
) -> None:
    secret = f"xyz-{secrets.token_hex(8)}"
    proof = f"/tmp/proof-{secrets.token_hex(4)}"
    configure(project, {"db-ready": {"audience": "container:database", "timeout": 10, "grace": 1}})
    project.hook(
        "db-ready",
        "10-proof",
        f"""\
        #!/bin/sh
        echo "$JUNCTURE_EVENT $JUNCTURE_CONTAINER_KIND $JUNCTURE_CONTAINER $(hostname)"
        echo "init: $(tr '\\0' ' ' < /proc/1/cmdline)"
        env > {proof}
        """,
    )
    done = fire(project, boxes, "db-ready", "-v", "--set", "color=it's $HOME", env={"SECRET_TOKEN": secret})
    assert done.returncode == 0, done.stderr
    hostname = inside(boxes, "db1", "hostname").strip()
    assert hostname and hostname != inside(boxes, "pg1", "hostname").strip()
    lines = done.stdout.splitlines()
    assert f"[db1 10-proof] db-ready database db1 {hostname}" in lines
    # pid 1 there is the container's init running `sleep 100000` (tests/servers.py), not this machine's init
    assert any(line.startswith("[db1 10-proof] init: ") and "sleep 100000" in line for line in lines), lines
    assert any(line.startswith("[db1] ✓ db-ready/10-proof  ") for line in lines)
    assert "[pg1" not in done.stdout and "[maria1" not in done.stdout
    # The hook wrote its environment inside db1 only.
    text = inside(boxes, "db1", f"cat {proof}")
    assert inside(boxes, "pg1", f"ls {proof} 2>/dev/null; true") == ""
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert env["JUNCTURE_EVENT"] == "db-ready"
    assert env["JUNCTURE_CONTAINER"] == "db1"
    assert env["JUNCTURE_CONTAINER_KIND"] == "database"
    assert env["JUNCTURE_STAGE"] == STAGE
    assert env["JUNCTURE_COLOR"] == "it's $HOME"
    assert "SECRET_TOKEN" not in text and secret not in text
    assert "CONTAINERS_CONF" not in text  # nothing else of the operator's environment either
    # The uploaded hook is removed from the container at the end of the run.
    assert uploads_left(boxes, "db1") == []


def test_container_hook_timeout_kills_its_process_group_inside_the_container(
    project: ProjectDir, boxes: Podman
) -> None:
    first = 3000 + secrets.randbelow(6000)
    second = first + 1
    configure(project, {"db-ready": {"audience": "container:database", "timeout": 1, "grace": 1}})
    project.hook("db-ready", "10-hang", f"#!/bin/sh\nsleep {first} &\nsleep {second}\n")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "db-ready", "--stage", STAGE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=boxes.environ(),
    )
    try:
        # Both sleeps do run in db1 (so that their absence afterwards means something).
        deadline = time.monotonic() + 10
        while not all(f"sleep {n}" in inside(boxes, "db1", "ps -o args") for n in (first, second)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hook's sleeps never showed up in db1"
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert err.startswith("juncture: [db1] event db-ready aborted: "), err
    assert "timed out after 1 s" in err
    assert "[db1] ✗ db-ready/10-hang  timed out after 1 s" in out
    assert elapsed < 15
    left = inside(boxes, "db1", "ps -o pid,args")
    assert f"sleep {first}" not in left and f"sleep {second}" not in left, left
    assert uploads_left(boxes, "db1") == []


def test_layer_scoped_to_a_container_kind_overrides_a_same_named_hook_only_there(
    project: ProjectDir, boxes: Podman
) -> None:
    proof = f"/tmp/layer-{secrets.token_hex(4)}"
    configure(
        project,
        {"migrate": {"audience": ["container:postgres", "container:mariadb"], "timeout": 10}},
        hooks_path=[".juncture/hooks", {"path": "layers/postgres", "containers": ["postgres"]}],
    )
    for layer, word in ((".juncture/hooks", "base"), ("layers/postgres", "postgres")):
        project.hook(
            "migrate",
            "10-setup",
            f'#!/bin/sh\necho "{word} in $JUNCTURE_CONTAINER on $(hostname)"\necho {word} >> {proof}\n',
            layer=layer,
        )
    done = fire(project, boxes, "migrate", "-v")
    assert done.returncode == 0, done.stderr
    host_of = {name: inside(boxes, name, "hostname").strip() for name in ("pg1", "maria1")}
    output = [line for line in done.stdout.splitlines() if " 10-setup] " in line]
    assert sorted(output) == sorted(
        [
            f"[pg1 10-setup] postgres in pg1 on {host_of['pg1']}",
            f"[maria1 10-setup] base in maria1 on {host_of['maria1']}",
        ]
    )
    # Each container ran exactly one 10-setup, the right one; db1 (kind database) none.
    assert inside(boxes, "pg1", f"cat {proof}") == "postgres\n"
    assert inside(boxes, "maria1", f"cat {proof}") == "base\n"
    assert inside(boxes, "db1", f"ls {proof} 2>/dev/null; true") == ""
    assert "event migrate: 2 hook run(s) on 2 target(s), 0 failed" in done.stdout


def test_json_lines_of_a_container_hook_carry_the_container_as_host(
    project: ProjectDir, boxes: Podman
) -> None:
    configure(project, {"db-ready": {"audience": "container:database", "timeout": 10}})
    project.hook("db-ready", "10-hello", '#!/bin/sh\necho "hello from $JUNCTURE_CONTAINER"\n')
    done = fire(project, boxes, "db-ready", "--json")
    assert done.returncode == 0, done.stderr
    hook_lines = [json.loads(line) for line in done.stdout.splitlines() if '"type": "hook-' in line]
    assert [(obj["type"], obj["host"]) for obj in hook_lines] == [
        ("hook-start", "db1"),
        ("hook-output", "db1"),
        ("hook-end", "db1"),
    ]
    assert hook_lines[1]["line"] == "hello from db1"


def test_missing_container_fails_the_run_with_the_engines_error(
    project: ProjectDir, boxes: Podman, tmp_path: Path
) -> None:
    body = {
        "app": "shop",
        "events": {"db-ready": {"audience": "container:database", "timeout": 10}},
        "stages": {
            STAGE: {
                "deploy_to": str(tmp_path / "deployed"),
                "containers": [{"name": "no-such-box", "kind": "database"}],
            }
        },
    }
    project.config(json.dumps(body) + "\n")
    project.hook("db-ready", "10-hello", "#!/bin/sh\necho hi\n")
    done = fire(project, boxes, "db-ready")
    assert done.returncode == 1
    assert done.stderr.startswith("juncture: [no-such-box] event db-ready aborted: "), done.stderr
    assert 'podman exec no-such-box: Error: no container with name or ID "no-such-box"' in done.stderr


def test_container_on_an_ssh_host_runs_its_hooks_inside_it_through_that_hosts_connection(
    project: ProjectDir, boxes: Podman, tmp_path: Path
) -> None:
    """`containers: [{host: h1}]`: `podman exec` runs on h1 (a private sshd whose sessions see the
    fixture's Podman storage), the hook inside db1, and the timeout's kill goes in through h1 too."""
    import servers

    server = servers.start_sshd(str(tmp_path / "sshd"), set_env=boxes.env)
    try:
        body = {
            "app": "shop",
            "events": {"db-ready": {"audience": "container:database", "timeout": 1, "grace": 1}},
            "stages": {
                STAGE: {
                    "deploy_to": str(tmp_path / "deployed"),
                    "hosts": [{"name": "h1", "address": "127.0.0.1"}],
                    "ssh": server.ssh_options(),
                    "containers": [{"name": "db1", "kind": "database", "host": "h1"}],
                }
            },
        }
        project.config(json.dumps(body) + "\n")
        proof = f"/tmp/remote-{secrets.token_hex(4)}"
        hang = 3000 + secrets.randbelow(6000)
        project.hook(
            "db-ready", "10-proof", f'#!/bin/sh\necho "$JUNCTURE_CONTAINER $JUNCTURE_HOST" > {proof}\n'
        )
        project.hook("db-ready", "20-hang", f"#!/bin/sh\nsleep {hang}\n")
        done = project.run("fire", "db-ready", "--stage", STAGE)  # without the Podman environment
    finally:
        server.stop()
    assert done.returncode == 1
    assert "[db1] ✓ db-ready/10-proof" in done.stdout
    assert "[db1] ✗ db-ready/20-hang  timed out after 1 s" in done.stdout
    assert inside(boxes, "db1", f"cat {proof}") == "db1 h1\n"
    assert f"sleep {hang}" not in inside(boxes, "db1", "ps -o args")
    assert uploads_left(boxes, "db1") == []
