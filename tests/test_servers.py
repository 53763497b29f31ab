"""The real-server fixtures themselves: sshd lets the client key in and pins its host key; containers run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from servers import Podman, SshServer


def _connect_options(server: SshServer, known_hosts: str) -> dict[str, object]:
    return {
        "port": server.port,
        "username": server.user,
        "client_keys": [server.client_key],
        "known_hosts": known_hosts,
    }


def test_sshd_runs_a_command_with_the_client_key(sshd: SshServer) -> None:
    import asyncssh

    async def run() -> tuple[asyncssh.SSHCompletedProcess, str, asyncssh.SSHCompletedProcess]:
        async with asyncssh.connect(sshd.address, **_connect_options(sshd, sshd.known_hosts)) as conn:
            key = conn.get_server_host_key()
            assert key is not None
            return await conn.run("echo hi"), key.get_fingerprint(), await conn.run("echo $SHLVL; exit 3")

    hi, fingerprint, shlvl = asyncio.run(asyncio.wait_for(run(), 10))
    assert (hi.exit_status, hi.stdout, hi.stderr) == (0, "hi\n", "")
    assert fingerprint == sshd.host_key_fingerprint
    # quiet_shell: SetEnv SHLVL=1, which bash raises to 2 and so skips ~/.bashrc.
    assert (shlvl.exit_status, shlvl.stdout) == (3, "2\n")
    assert sshd.alive()


def test_sshd_host_key_mismatch_is_refused(sshd: SshServer) -> None:
    import asyncssh

    async def run() -> None:
        async with asyncssh.connect(sshd.address, **_connect_options(sshd, sshd.wrong_known_hosts())):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(asyncio.wait_for(run(), 10))


def test_podman_container_runs_commands(podman: Podman) -> None:
    name = podman.run("juncture-test-servers", "juncture.test=servers")
    try:
        done = podman.exec(name, "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
        # A script on stdin: the exec'd shell leads its own process group, as servers.py documents.
        script = podman.exec(name, "sh", "-s", input="cut -d' ' -f1,5 /proc/$$/stat\n")
        pid, pgid = script.stdout.split()
        assert (script.returncode, pid) == (0, pgid)
        labels = podman.podman("inspect", "--format", '{{index .Config.Labels "juncture.test"}}', name)
        assert labels.stdout.strip() == "servers"
    finally:
        podman.remove(name)
    assert podman.exec(name, "true").returncode == 125  # no such container
