"""A run's ways to reach its targets: one SSH pool (a connection per host, opened once) and the
container engines. The engine asks it to start hooks anywhere but this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...config.hosts import Host, Placement
from ...engine import Process
from ...model.target import Target
from ...sources.rundirs import Hook
from ..shell import TOKEN, Upload, file_argv, hook_script

if TYPE_CHECKING:
    from .worker import SshPool

__all__ = ["Connections"]


class Connections:
    def __init__(self, placement: Placement, run_id: str) -> None:
        self.placement = placement
        self.run_id = run_id
        self.pool: SshPool | None = None
        self.unreachable: dict[str, str] = {}  # host name -> why
        self._files: dict[str, Upload] = {}
        self._swept: set[tuple[str, str]] = set()  # local containers whose first session swept them

    # -- SSH --------------------------------------------------------------------------------------

    def ssh(self) -> SshPool:
        if self.pool is None:
            from .worker import SshPool

            self.pool = SshPool(self.placement.ssh, self.placement.concurrency)
        return self.pool

    def connect(self, hosts: list[Host]) -> dict[str, str]:
        """Connect to `hosts` (those not connected yet); {name: reason} for the unreachable ones."""
        if not hosts:
            return {}
        failed = self.ssh().connect(hosts)
        self.unreachable.update(failed)
        return failed

    def close(self) -> None:
        """Close the SSH connections, which cleans up the hosts. (A hook's session in a local container
        removes its private directory itself, or its kill does.)"""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- hooks ------------------------------------------------------------------------------------

    def start(
        self, target: Target, hook: Hook, env: dict[str, str], cwd: str | None, grace: float
    ) -> Process:
        argv = self._argv(hook)
        container = target.container
        if target.kind == "ssh":
            return self.ssh().spawn(target.name, argv, env, cwd, grace)
        assert container is not None
        if container.host is not None:
            return self.ssh().spawn(container.host, argv, env, cwd, grace, (container.engine, container.name))
        from ..container import ContainerProcess

        uploads = [a for a in argv if isinstance(a, Upload)]
        where = (container.engine, container.name)
        script = hook_script(argv, env, cwd, uploads, grace, where not in self._swept)
        self._swept.add(where)
        return ContainerProcess(container.engine, container.name, script, env.get(TOKEN))

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
