"""SSH hosts through asyncssh: one connection per host per run, reused for every hook and step.

asyncssh needs an event loop and the engine is a poll loop, so the event loop runs in a thread of its own
and a remote hook is a `RemoteProcess` whose output and exit arrive on pipes: the engine polls them, and
enforces timeouts, logs and failure modes exactly as for a local hook. Built-in steps (`run`) block the
calling thread on the loop. asyncssh is imported only here, when a run touches a host (~240 ms).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from ..config.hosts import Host, SshOptions
from .remote_script import NOT_STARTED, PGID_MARK, Upload, hook_script, quote

__all__ = ["RemoteProcess", "SshPool"]

T = TypeVar("T")
_CONNECT_TRIES = 6  # sshd's MaxStartups drops connections beyond its limit: try again, backing off
_BACKOFF = 0.15
_CHANNELS = 8  # sessions per connection at once: below sshd's default MaxSessions (10), room for kills
_RETRYABLE = (OSError, asyncssh.ConnectionLost, asyncssh.DisconnectError, TimeoutError, EOFError)


class _Verifier(asyncssh.SSHClient):
    """Records the key a host offers, for the message; accepts it only for `accept-new` and an unknown
    host (a changed key is refused in every mode)."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        return self.accept


@dataclass
class _Connection:
    host: Host
    conn: asyncssh.SSHClientConnection
    channels: asyncio.Semaphore
    directory: str  # private per-run directory for uploaded hooks (on the host, or in a container)
    uploaded: dict[str, set[str]] = field(default_factory=dict)  # where ("" or a container) -> files


class SshPool:
    def __init__(self, options: SshOptions, run_id: str, concurrency: int) -> None:
        self.options = options
        self.concurrency = concurrency
        self.token = f"{run_id}-{secrets.token_hex(8)}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="juncture-ssh", daemon=True)
        self.thread.start()
        self.connections: dict[str, _Connection] = {}
        self.failed: dict[str, str] = {}  # host name -> why it is unreachable
        self._known: tuple[str, asyncssh.SSHKnownHosts] | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # -- connections ------------------------------------------------------------------------------

    def connect(self, hosts: list[Host]) -> dict[str, str]:
        """Open a connection to each host not connected yet, in parallel; returns {name: reason} for
        the hosts that could not be reached."""
        wanted = [h for h in hosts if h.name not in self.connections]
        self.call(self._connect_all(wanted))
        return {h.name: self.failed[h.name] for h in hosts if h.name in self.failed}

    async def _connect_all(self, hosts: list[Host]) -> None:
        bound = asyncio.Semaphore(self.concurrency)

        async def one(host: Host) -> None:
            async with bound:
                try:
                    conn = await self._connect(host)
                except _Refused as exc:
                    self.failed[host.name] = str(exc)
                    return
            directory = f"/tmp/juncture-{self.token}-{host.name}"
            self.connections[host.name] = _Connection(host, conn, asyncio.Semaphore(_CHANNELS), directory)

        await asyncio.gather(*(one(h) for h in hosts))

    def _known_hosts(self) -> tuple[str, asyncssh.SSHKnownHosts]:
        """The known_hosts file, parsed once per run (not once per host)."""
        if self._known is None:
            path = self.options.known_hosts_file or os.path.expanduser("~/.ssh/known_hosts")
            parsed = (
                asyncssh.read_known_hosts(path) if os.path.exists(path) else asyncssh.import_known_hosts("")
            )
            self._known = (path, parsed)
        return self._known

    async def _connect(self, host: Host) -> asyncssh.SSHClientConnection:
        options = self.options
        port = host.port or options.port
        where = f"{host.name} ({host.address}{f':{port}' if port else ''})"
        known_file, known = self._known_hosts()
        listed = known.match(host.address, "", port or 22)
        accept = options.known_hosts == "accept-new" and not (listed[0] or listed[1])
        verifier = _Verifier(accept)
        kwargs: dict[str, Any] = {
            "known_hosts": known,
            "connect_timeout": options.connect_timeout,
            "keepalive_interval": options.keepalive or None,
        }
        if port:
            kwargs["port"] = port
        if host.user or options.user:
            kwargs["username"] = host.user or options.user
        if options.identity_file:
            kwargs["client_keys"] = [options.identity_file]
        if not options.agent:
            kwargs["agent_path"] = None
        if options.config_file:
            kwargs["config"] = [options.config_file]
        delay = _BACKOFF
        for attempt in range(_CONNECT_TRIES):
            try:
                conn = await asyncssh.connect(host.address, client_factory=lambda: verifier, **kwargs)
            except asyncssh.HostKeyNotVerifiable:
                raise _Refused(_key_problem(where, verifier.offered, known_file, bool(listed[0]))) from None
            except asyncssh.PermissionDenied as exc:
                raise _Refused(f"{where}: authentication refused ({exc.reason})") from None
            except _RETRYABLE as exc:
                if attempt == _CONNECT_TRIES - 1:
                    reason = getattr(exc, "reason", None) or exc.strerror if isinstance(exc, OSError) else exc
                    raise _Refused(
                        f"{where}: {reason or type(exc).__name__} (tried {_CONNECT_TRIES} times)"
                    ) from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if accept and verifier.offered is not None:
                _remember(known_file, host.address, port, verifier.offered)
            return conn
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Remove the uploaded hooks, close every connection, stop the loop."""
        if self.connections:
            self.call(self._close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _close_all(self) -> None:
        async def one(c: _Connection) -> None:
            for via in c.uploaded:
                try:
                    await asyncio.wait_for(c.conn.run(f"{via}rm -rf {quote(c.directory)}"), 10)
                except (asyncssh.Error, OSError, TimeoutError):
                    pass
            c.conn.close()
            await c.conn.wait_closed()

        await asyncio.gather(*(one(c) for c in self.connections.values()))

    # -- built-in steps ---------------------------------------------------------------------------

    def run(self, host: str, script: str, data: bytes = b"") -> tuple[int, str]:
        """Run a shell script (given on stdin to `sh -s`) and wait: (exit code, output)."""
        return self.call(self._run(host, script, data))

    def run_all(self, jobs: list[tuple[str, str, bytes]]) -> list[tuple[int, str]]:
        """Several `run`s at once, one per (host, script, data)."""

        async def gather() -> list[tuple[int, str]]:
            return list(await asyncio.gather(*(self._run(*job) for job in jobs)))

        return self.call(gather())

    async def _run(self, name: str, script: str, data: bytes) -> tuple[int, str]:
        c = self.connections[name]
        # The script comes on stdin (no secret on a command line) unless `data` needs stdin: built-in
        # steps that send data carry only paths in their script.
        command, stdin = (
            ("exec sh -s", script.encode()) if not data else (f"exec sh -c {quote(script)}", data)
        )
        try:
            async with c.channels:
                done = await c.conn.run(command, input=stdin, encoding=None, stderr=asyncssh.STDOUT)
        except (asyncssh.Error, OSError) as exc:
            return 255, f"connection to {name} lost: {exc}"
        output = done.stdout if isinstance(done.stdout, bytes) else b""
        code = done.exit_status if done.exit_status is not None else 255
        return code, output.decode("utf-8", "replace")

    # -- hooks ------------------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: list[str | Upload],
        env: dict[str, str],
        cwd: str | None,
        container: tuple[str, str] | None = None,
    ) -> RemoteProcess:
        """Start a hook on host `name`, or in a container there: (engine, container name)."""
        process = RemoteProcess(self, name, container)
        self.loop.call_soon_threadsafe(self._start, process, argv, env, cwd)
        return process

    def _start(
        self, process: RemoteProcess, argv: list[str | Upload], env: dict[str, str], cwd: str | None
    ) -> None:
        c = self.connections.get(process.host)
        if c is None:
            process.finish(NOT_STARTED, f"host {process.host} is not connected")
            return
        uploaded = (
            c.uploaded.setdefault(process.via, set()) if any(isinstance(a, Upload) for a in argv) else set()
        )
        send = [a for a in argv if isinstance(a, Upload) and a.name not in uploaded]
        script = hook_script(argv, env, cwd, c.directory, send)
        process.task = self.loop.create_task(process.run(c, script, send))


class _Refused(Exception):
    pass


def _key_problem(where: str, key: asyncssh.SSHKey | None, known_file: str, listed: bool) -> str:
    fingerprint = key.get_fingerprint("sha256") if key is not None else "(no key offered)"
    if listed:
        return (
            f"{where}: HOST KEY CHANGED: it offers {fingerprint}, which {known_file} does not list for "
            "it. Refused (a man in the middle, or a reinstalled host: check, then fix known_hosts)"
        )
    return (
        f"{where}: unknown host key {fingerprint}: not in {known_file}. Refused (add it to known_hosts, "
        "or set ssh: {known_hosts: accept-new})"
    )


def _remember(known_file: str, address: str, port: int | None, key: asyncssh.SSHKey) -> None:
    name = address if not port or port == 22 else f"[{address}]:{port}"
    line = f"{name} {key.export_public_key('openssh').decode().split(' comment')[0].strip()}\n"
    os.makedirs(os.path.dirname(known_file) or ".", mode=0o700, exist_ok=True)
    with open(known_file, "a") as handle:
        handle.write(line)


class RemoteProcess:
    """A hook running on a host, seen by the engine like a LocalProcess: `out_fd` carries its output,
    `exit_fd` turns readable when it ended. The loop thread writes both."""

    def __init__(self, pool: SshPool, host: str, container: tuple[str, str] | None = None) -> None:
        self.pool = pool
        self.host = host
        # In a container the hook's group lives inside it: start and signal it through `exec`.
        self.via = f"{container[0]} exec -i {quote(container[1])} " if container else ""
        self.out_fd, self._out_w = os.pipe()
        self.exit_fd, self._exit_w = os.pipe()
        os.set_blocking(self._out_w, False)
        self.code: int | None = None
        self.error = ""
        self.pgid: int | None = None
        self.pending: list[str] = []  # signals asked for before the group was known
        self.channel: asyncssh.SSHClientProcess[bytes] | None = None
        self.task: asyncio.Task[None] | None = None
        self.connection: _Connection | None = None

    async def run(self, c: _Connection, script: bytes, send: list[Upload]) -> None:
        self.connection = c
        code, error = 255, ""
        try:
            async with c.channels:
                channel = await c.conn.create_process(f"exec {self.via}sh -s", encoding=None)
                self.channel = channel
                channel.stdin.write(script)
                channel.stdin.write_eof()
                mark = await channel.stderr.readline()
                if mark.startswith(PGID_MARK):
                    self.pgid = int(mark[len(PGID_MARK) :])
                    if send:
                        c.uploaded.setdefault(self.via, set()).update(u.name for u in send)
                    for signal_name in self.pending:
                        self._signal(signal_name)
                elif mark:
                    await self._write(mark)
                while chunk := await channel.stdout.read(65536):
                    await self._write(chunk)
                await channel.wait()
                status = channel.exit_status
                code = status if status is not None and status >= 0 else 255
                if channel.exit_signal is not None:
                    code = -_signal_number(channel.exit_signal[0])
        except (asyncssh.Error, OSError) as exc:
            error = f"connection to {self.host} lost: {getattr(exc, 'reason', None) or exc}"
        self.finish(code, error)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._out_w, view) :]
            except BlockingIOError:
                await asyncio.sleep(0.002)  # the engine has not read yet
            except BrokenPipeError:
                return

    def finish(self, code: int, error: str = "") -> None:
        self.code = code
        self.error = error
        os.close(self._out_w)
        os.write(self._exit_w, b"x")
        os.close(self._exit_w)

    def _signal(self, name: str) -> None:
        if self.pgid is None or self.connection is None:
            self.pending.append(name)
            return
        # The shell's own kill: Debian's /bin/kill reads -PGID as a signal number; dash refuses --.
        command = f"exec {self.via}sh -c 'kill -{name} -{self.pgid}' 2>/dev/null"
        conn = self.connection.conn

        async def send() -> None:
            try:
                await conn.run(command)
            except (asyncssh.Error, OSError):
                pass
            if name == "KILL" and self.channel is not None and self.code is None:
                await asyncio.sleep(0.5)  # something outside the group holds the output open
                self.channel.close()

        self.pool.loop.create_task(send())

    # -- the engine's side --------------------------------------------------------------------------

    def terminate(self) -> None:
        self.pool.loop.call_soon_threadsafe(self._signal, "TERM")

    def kill(self) -> None:
        self.pool.loop.call_soon_threadsafe(self._signal, "KILL")

    def reap(self) -> int:
        os.close(self.exit_fd)
        return self.code if self.code is not None else 255

    def close_output(self) -> None:
        if self.out_fd >= 0:
            os.close(self.out_fd)
            self.out_fd = -1


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        return int(signal.SIGKILL)
