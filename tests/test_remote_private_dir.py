"""Every file of a run on a host or in a container lives in one private directory (`mktemp -d`, 0700): an
unprivileged user who plants symlinks and FIFOs under /tmp at every name the run uses or could be guessed
to use changes nothing outside that directory, learns nothing, and gets nothing into the store.

The attacker is a real second user (`nobody`, uid 65534) running a loop that watches /tmp for juncture's
entries and plants, beside each of them and at the names the old layout (`/tmp/juncture-<run>-<host>-<n>-*`)
would use next: symlinks to a file of its own (to read what juncture writes there and add lines of its
own), symlinks to a file of root's (to have it overwritten), and FIFOs (to hang the run). On a host (the
session's loopback sshd) `10-hang` times out, so that the next hook runs in a new worker whose names the
old layout made predictable; `20-put` writes outputs and a secret. In a container on this machine each
hook has a session of its own, and the attacker knows the hooks' files (their names were their hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers.containers import app_container
from test_remote import STAGE, configure, fire, host

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import Podman, SshServer

NOBODY = 65534
HOSTS = ("h1", "h2", "h3")

# sh -c ATTACK sh LOOT VICTIM STOP FIFO_PATTERN VICTIM_PATTERN SPARE_PATTERN NAME...: plants until STOP
# exists. A path matching FIFO_PATTERN is a FIFO, VICTIM_PATTERN a symlink to VICTIM, SPARE_PATTERN left
# alone, any other a symlink to LOOT (which it keeps appending a line of its own to).
ATTACK = r"""
L=$1 V=$2 STOP=$3 F=$4 W=$5 K=$6; shift 6
: >> "$L"; chmod 666 "$L"
while [ ! -e "$STOP" ]; do
  for e in /tmp/juncture*; do
    [ -L "$e" ] || [ -p "$e" ] || [ ! -e "$e" ] || [ -O "$e" ] && continue
    a=${e%-*}; b=${a%-*}
    for p in "$e" "$a" "$b"; do
      for n in "$@"; do
        t="$p-$n"
        [ -e "$t" ] || [ -L "$t" ] && continue
        case $t in
          $K) ;;
          $F) mkfifo -m 666 "$t" ;;
          $W) ln -s "$V" "$t" ;;
          *) ln -s "$L" "$t" ;;
        esac
      done 2>/dev/null
      if [ -d "$p" ]; then for n in "$@"; do ln -s "$L" "$p/$n"; mkfifo "$p/$n.fifo"; done; fi 2>/dev/null
    done
  done
  echo "EVIL_PLANTED=by-the-attacker" >> "$L"
  sleep 0.01
done
"""


def upload_name(data: str) -> str:
    return hashlib.sha1(data.encode()).hexdigest()[:20]


def guessable(hooks: list[str]) -> list[str]:
    """What the run's files were or would be called after a prefix: outputs files and the hooks' files,
    of the first workers."""
    names = ["out"]
    for worker in range(1, 6):
        names += [f"{worker}-out", *(f"{worker}-{upload_name(h)}" for h in hooks)]
    return names + [upload_name(h) for h in hooks]


class Attacker:
    """The attack loop running as `nobody` through `argv` (runuser here, `podman exec --user` there)."""

    def __init__(
        self, argv: list[str], stop: list[str], names: list[str], fifo: str, victim: str, spare: str = ""
    ) -> None:
        self.tag = secrets.token_hex(4)
        self.loot = f"/tmp/h1-loot-{self.tag}"
        self.victim = f"/tmp/h1-victim-{self.tag}"
        self.stop_file = f"/tmp/h1-stop-{self.tag}"
        self._stop = [*stop, self.stop_file]
        args = [self.loot, self.victim, self.stop_file, fifo, victim, spare, *names]
        self.proc = subprocess.Popen(
            [*argv, "sh", "-c", ATTACK, "sh", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def stop(self) -> None:
        subprocess.run(self._stop, check=True)
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def stored(project: ProjectDir) -> dict[tuple[str, str], str]:
    done = project.run("kv", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {(e["ns"], e["key"]): e["value"] for e in json.loads(done.stdout)}


def hooks_writing_outputs(project: ProjectDir, event: str) -> list[str]:
    """10-hang (times out: its worker is killed, the next hook gets a new one) and 20-put (writes a
    value and the secret to its outputs file)."""
    hang = "#!/bin/sh\nsleep 30\n"
    put = (
        "#!/bin/sh\n"
        'echo "PUT_$JUNCTURE_HOST=ok" >> "$JUNCTURE_OUTPUT"\n'
        'echo "COPY_$JUNCTURE_HOST=$JUNCTURE_SECRET_API_TOKEN" >> "$JUNCTURE_OUTPUT"\n'
    )
    project.hook(event, "10-hang", hang)
    project.hook(event, "20-put", put)
    return [hang, put]


def put_secret(project: ProjectDir) -> str:
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    done = project.run("kv", "put", "--secret", "API_TOKEN", input=secret + "\n")
    assert done.returncode == 0, done.stderr
    return secret


EVENT = {"timeout": 3, "grace": 1, "failure": "continue", "secrets": ["API_TOKEN"]}


def clean_host_plants(tag: str) -> None:
    """Remove what the attacker made in /tmp (all of it is nobody's)."""
    for entry in Path("/tmp").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.lstat().st_uid == NOBODY and (entry.name.startswith("juncture") or tag in entry.name):
                entry.unlink()


def test_plants_in_a_hosts_tmp_change_nothing_and_reach_no_store(
    project: ProjectDir, sshd: SshServer
) -> None:
    configure(project, sshd, [host(name) for name in HOSTS], {"ping": {"audience": "hosts", **EVENT}})
    hooks = hooks_writing_outputs(project, "ping")
    secret = put_secret(project)
    # h1's old outputs names lead to the attacker's file (its hooks' names are spared, so that they
    # run), h2's names are FIFOs, h3's lead to a file of root's.
    runuser = ["runuser", "-u", "nobody", "--"]
    attacker = Attacker(runuser, ["touch"], guessable(hooks), "*-h2-*", "*-h3-*", "*-h1-*[!t]")
    try:
        victim = Path(attacker.victim)
        victim.write_text("root's precious file\n")
        victim.chmod(0o644)
        done = fire(project, "ping", timeout=60)
    finally:
        attacker.stop()
        loot = Path(attacker.loot).read_text() if os.path.exists(attacker.loot) else ""
        victim_text = Path(attacker.victim).read_text()
        os.unlink(attacker.victim)
        os.unlink(attacker.stop_file)
        clean_host_plants(attacker.tag)
    assert "EVIL_PLANTED" in loot, "the attacker never ran: " + attacker.proc.stderr.read().decode()
    assert victim_text == "root's precious file\n"
    assert secret not in loot and "PUT_" not in loot
    store = stored(project)
    assert [key for _, key in store if "EVIL" in key] == []
    assert not any("by-the-attacker" in value for value in store.values())
    for name in HOSTS:
        assert f"[{name}] ✗ ping/10-hang  timed out after 3 s" in done.stdout, done.stdout + done.stderr
        assert any(line.startswith(f"[{name}] ✓ ping/20-put  ") for line in done.stdout.splitlines()), (
            done.stdout + done.stderr
        )
    assert {key for _, key in store if key.startswith("PUT_")} == {f"PUT_{name}" for name in HOSTS}


# -- containers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(podman: Podman) -> Iterator[tuple[Podman, str]]:
    with app_container(podman, "plants") as made:
        yield made


def inside(box: tuple[Podman, str], script: str) -> str:
    podman, name = box
    done = podman.exec(name, "sh", "-c", script)
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done.stdout


def container_attacker(box: tuple[Podman, str], names: list[str], fifo: str) -> Attacker:
    podman, name = box
    run = ["env", *(f"{k}={v}" for k, v in podman.env.items()), "podman", "exec"]
    attacker = Attacker([*run, "--user", str(NOBODY), name], [*run, name, "touch"], names, fifo, "")
    inside(box, f"echo precious > {attacker.victim}; chmod 644 {attacker.victim}")
    return attacker


def box_config(name: str, event: dict[str, Any], **stage: Any) -> str:
    body = {
        "app": "shop",
        "events": {"ping": {"audience": "container:app", **event}},
        "stages": {STAGE: {"containers": [{"name": name, "kind": "app", **stage.pop("where", {})}], **stage}},
    }
    return json.dumps(body) + "\n"


def test_plants_in_a_local_containers_tmp_change_nothing(
    project: ProjectDir, box: tuple[Podman, str], tmp_path: Path
) -> None:
    """Each hook's session uploads its file; the attacker plants FIFOs at every name it could have."""
    project.config(box_config(box[1], {"timeout": 5, "grace": 1}, deploy_to=str(tmp_path / "d")))
    first = "#!/bin/sh\nsleep 1\n"
    second = "#!/bin/sh\necho second ran\n"
    project.hook("ping", "10-first", first)
    project.hook("ping", "20-second", second)
    attacker = container_attacker(box, guessable([first, second]), "*")
    try:
        done = project.run("fire", "ping", "--stage", STAGE, "-v", env=box[0].environ(), timeout=60)
    finally:
        attacker.stop()
    assert "EVIL_PLANTED" in inside(box, f"cat {attacker.loot}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[{box[1]} 20-second] second ran" in done.stdout
    assert inside(box, f"cat {attacker.victim}") == "precious\n"


def test_plants_in_a_container_on_a_host_change_nothing_and_reach_no_store(
    project: ProjectDir, box: tuple[Podman, str], tmp_path: Path
) -> None:
    """A container on an SSH host: its hooks run in workers inside it, like a host's."""
    import servers

    server = servers.start_sshd(str(tmp_path / "sshd"), set_env=box[0].env)
    try:
        ssh = server.ssh_options()
        project.config(
            box_config(
                box[1],
                EVENT,
                where={"host": "h1"},
                deploy_to=str(tmp_path / "d"),
                hosts=[{"name": "h1", "address": "127.0.0.1"}],
                ssh=ssh,
            )
        )
        hooks = hooks_writing_outputs(project, "ping")
        secret = put_secret(project)
        attacker = container_attacker(box, guessable(hooks), "no FIFOs")
        try:
            done = project.run("fire", "ping", "--stage", STAGE, timeout=60)
        finally:
            attacker.stop()
    finally:
        server.stop()
    loot = inside(box, f"cat {attacker.loot}")
    assert "EVIL_PLANTED" in loot
    assert f"[{box[1]}] ✓ ping/20-put" in done.stdout, done.stdout + done.stderr
    assert secret not in loot and "PUT_" not in loot
    assert inside(box, f"cat {attacker.victim}") == "precious\n"
    store = stored(project)
    assert [key for _, key in store if key.startswith("PUT_")] == ["PUT_h1"]
    assert [key for _, key in store if "EVIL" in key] == []


def test_built_in_steps_on_a_host_keep_the_users_umask(sshd: SshServer, tmp_path: Path) -> None:
    """The worker makes its own files private; what a deploy makes is for others to read (umask 022)."""
    from test_fleet_deploy import deploy_project, ok, run

    project = deploy_project(tmp_path, sshd, [host("h1")], {}, shared_file=False)
    ok(run(project, "deploy", STAGE))
    deployed = tmp_path / "deployed" / "h1"
    modes = {p: (deployed / p).stat().st_mode & 0o777 for p in ("", "releases", "shared", "shared/log")}
    assert modes == {"": 0o755, "releases": 0o755, "shared": 0o755, "shared/log": 0o755}
    assert (deployed / "revisions.log").stat().st_mode & 0o777 == 0o644
