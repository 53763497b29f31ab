"""A run's ways to reach its targets: one SSH pool (a connection per host, opened once) and the
container engines. The engine asks it to start hooks anywhere but this machine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config.hosts import Host, Placement
from .discovery import Hook
from .engine import Process
from .runners.remote_script import Upload, file_argv, hook_script, quote
from .targets import Target

if TYPE_CHECKING:
    from .runners.ssh import SshPool

__all__ = ["Connections"]


class Connections:
    def __init__(self, placement: Placement, run_id: str) -> None:
        self.placement = placement
        self.run_id = run_id
        self.pool: SshPool | None = None
        self.unreachable: dict[str, str] = {}  # host name -> why
        self._files: dict[str, Upload] = {}
        self._token = f"{run_id}-{os.urandom(8).hex()}"
        self._containers: set[tuple[str, str]] = set()  # local (engine, name) that got uploads

    # -- SSH --------------------------------------------------------------------------------------

    def ssh(self) -> SshPool:
        if self.pool is None:
            from .runners.ssh import SshPool  # asyncssh only when a run touches a host

            self.pool = SshPool(self.placement.ssh, self.run_id, self.placement.concurrency)
        return self.pool

    def connect(self, hosts: list[Host]) -> dict[str, str]:
        """Connect to `hosts` (those not connected yet); {name: reason} for the unreachable ones."""
        if not hosts:
            return {}
        failed = self.ssh().connect(hosts)
        self.unreachable.update(failed)
        return failed

    def close(self) -> None:
        """Remove uploaded hooks from local containers, close the SSH connections (which cleans up
        the hosts)."""
        if self._containers:
            import subprocess

            for engine, name in self._containers:
                subprocess.run(
                    [engine, "exec", name, "sh", "-c", f"rm -f {quote(self._prefix)}-*"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            self._containers.clear()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- hooks ------------------------------------------------------------------------------------

    def start(self, target: Target, hook: Hook, env: dict[str, str], cwd: str | None) -> Process:
        argv = self._argv(hook)
        container = target.container
        if target.kind == "ssh":
            return self.ssh().spawn(target.name, argv, env, cwd)
        assert container is not None
        if container.host is not None:
            return self.ssh().spawn(container.host, argv, env, cwd, (container.engine, container.name))
        from .runners.container import ContainerProcess

        uploads = [a for a in argv if isinstance(a, Upload)]
        if uploads:
            self._containers.add((container.engine, container.name))
        script = hook_script(argv, env, cwd, self._prefix, uploads)
        return ContainerProcess(container.engine, container.name, script)

    @property
    def _prefix(self) -> str:
        return f"/tmp/juncture-{self._token}"

    def _upload(self, path: str) -> Upload:
        upload = self._files.get(path)
        if upload is None:
            with open(path, "rb") as handle:
                upload = self._files[path] = Upload(handle.read())
        return upload

    def _argv(self, hook: Hook) -> list[str | Upload]:
        command = hook.command
        if command is None:
            return file_argv(self._upload(hook.path))
        argv: list[str | Upload] = list(command.argv)
        if command.file is not None:
            argv[-1] = self._upload(command.file)
        if command.script is not None:
            argv.append(Upload(command.script.encode()))
        return argv
