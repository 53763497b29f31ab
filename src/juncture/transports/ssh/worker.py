"""SSH hosts through asyncssh: one connection per host per run, reused for every hook and step.

asyncssh needs an event loop and the engine is a poll loop, so the event loop runs in a thread of its own
and a remote hook is a `RemoteProcess` whose output and exit arrive on pipes: the engine polls them, and
enforces timeouts, logs and failure modes exactly as for a local hook. Built-in steps (`run`) block the
calling thread on the loop. asyncssh is imported only here, when a run touches a host (~170 ms, with
its search for liboqs shortened: see `libraries`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ...config.hosts import Host, SshOptions
from ...errors import JunctureError
from ..libraries import quick_find_library
from ..shell import (
    NOT_STARTED,
    OUTPUTS,
    PGID_MARK,
    TOKEN,
    Upload,
    hook_request,
    kill_script,
    private_directory,
    quote,
    script_request,
    worker_prelude,
)

with quick_find_library():
    import asyncssh

__all__ = ["RemoteProcess", "SshPool"]

T = TypeVar("T")
_CONNECT_TRIES = 6  # sshd's MaxStartups drops connections beyond its limit: try again, backing off
_REFUSED_TRIES = 3
_BACKOFF = 0.15
_CHANNELS = 8  # sessions per connection at once: below sshd's default MaxSessions (10), room for kills
_RETRYABLE = (OSError, asyncssh.ConnectionLost, asyncssh.DisconnectError, TimeoutError, EOFError)
# A worker channel's receive window (asyncssh's default, set here because `_READ` depends on it), and
# what one read of its output may take. asyncssh re-opens the whole window as soon as it hands one packet
# to a paused reader, even with a window's worth still queued behind it, so a reader that takes less than
# everything queued lets the host send without bound (64 KiB reads held 600 MB of a hook's output in
# memory). Taking it all each time keeps at most about two windows queued, and a reader that waits (the
# engine's pipe is full) stops the host: the window is re-opened only when the reader comes back.
_WINDOW = 2 << 20
_READ = 2 * _WINDOW


class _Verifier(asyncssh.SSHClient):
    """Records the key a host offers, for the message; accepts it only for `accept-new` and an unknown
    host (a changed key is refused in every mode)."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        return self.accept


class _Worker:
    """A shell session on a host (or in a container there) that runs requests one after another: hooks
    and built-in steps reuse it instead of paying for a session each (sshd's fork and the login shell)."""

    def __init__(self, channel: asyncssh.SSHClientProcess[bytes], via: str) -> None:
        self.channel = channel
        self.via = via
        self.token = os.urandom(16).hex()
        self.marker = f"\n{self.token} ".encode()
        self.uploaded: set[str] = set()
        self.rest = b""  # what came after a request's status: its outputs file
        self.pgid: int | None = None
        self.directory: str | None = None  # its private directory, where every file of it lives
        self.failure = b""  # what the shell said instead of starting
        self.ready = asyncio.get_running_loop().create_task(self._started())

    async def _started(self) -> None:
        """The group to signal and the private directory, from the prelude's first line (read while the
        first request runs)."""
        mark = await self.channel.stderr.readline()
        if mark.startswith(PGID_MARK):
            pgid, _, directory = mark[len(PGID_MARK) :].decode("utf-8", "replace").strip().partition(" ")
            self.pgid = int(pgid)
            self.directory = private_directory(directory)
        else:
            self.failure = mark + await self.channel.stderr.read()

    async def outputs(self) -> bytes:
        """The hook's outputs file, which follows its status when the request asked for it."""
        end = f"\n{self.token} end\n".encode()
        data = self.rest
        while end not in data:
            chunk = await self.channel.stdout.read(_READ)
            if not chunk:
                raise asyncssh.ConnectionLost("the worker ended before sending the hook's outputs")
            data += chunk
        self.rest = b""
        return data[: data.index(end)]

    async def output(self, write: Callable[[bytes | memoryview], Awaitable[None]]) -> int | None:
        """Pass one request's output to `write`; its status, or None when the worker ended first."""
        held = self.rest = b""
        keep = len(self.marker) - 1  # a marker may be split across chunks: hold back its length
        while chunk := await self.channel.stdout.read(_READ):
            if held and self.marker not in held + chunk[:keep]:
                await write(held)  # no marker starts in it: pass it on rather than copy the chunk onto it
                held = b""
            data = held + chunk if held else chunk
            at = data.find(self.marker)
            if at >= 0:
                end = data.find(b"\n", at + len(self.marker))
                if end < 0:
                    held = data
                    continue
                await write(memoryview(data)[:at])
                self.rest = data[end + 1 :]
                return int(data[at + len(self.marker) : end])
            if len(data) > keep:
                await write(memoryview(data)[:-keep])
                data = data[-keep:]
            held = data
        await write(held)
        return None


class _Connection:
    """One host's connection and its sessions: at most `_CHANNELS` at once, idle workers kept for reuse
    (and closed to make room for a session of another kind when all are idle)."""

    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self.conn = conn
        self.idle: list[_Worker] = []
        self.open = 0
        self.swept: set[str] = set()  # the `via`s whose first worker swept what dead ones left
        self.room = asyncio.Condition()

    async def slot(self) -> None:
        async with self.room:
            while self.open >= _CHANNELS:
                if self.idle:
                    self.idle.pop(0).channel.stdin.write_eof()
                    self.open -= 1
                    break
                await self.room.wait()
            self.open += 1

    async def free(self) -> None:
        async with self.room:
            self.open -= 1
            self.room.notify()

    async def worker(self, via: str) -> _Worker:
        """An idle worker of `via` ("" the host, else a container's exec prefix), or a new one."""
        for worker in self.idle:
            if worker.via == via:
                self.idle.remove(worker)
                return worker
        return await self._new_worker(via)

    async def warm(self) -> None:
        """Start a worker on the host right away, while other hosts still connect: its shell is ready
        when the first request comes (the run starts only once every host has answered)."""
        try:
            worker = await self._new_worker("")
        except (asyncssh.Error, OSError):
            return  # the first request will try again, and say what is wrong
        async with self.room:
            self.idle.append(worker)
            self.room.notify()

    async def _new_worker(self, via: str) -> _Worker:
        await self.slot()
        try:
            channel = await self.conn.create_process(f"exec {via}sh -s", encoding=None, window=_WINDOW)
            channel.stdin.write(worker_prelude(via not in self.swept))
            self.swept.add(via)
        except BaseException:
            await self.free()
            raise
        return _Worker(channel, via)

    async def done(self, worker: _Worker, reusable: bool) -> None:
        if reusable:
            async with self.room:
                self.idle.append(worker)
                self.room.notify()
            return
        worker.channel.close()
        await self.free()


class SshPool:
    def __init__(self, options: SshOptions, concurrency: int) -> None:
        self.options = options
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="juncture-ssh", daemon=True)
        self.thread.start()
        self.connections: dict[str, _Connection] = {}
        self.failed: dict[str, str] = {}  # host name -> why it is unreachable
        self.signals: set[asyncio.Task[None]] = set()  # kills on their way to hosts
        self.signalled = False  # set by the engine's thread: wait for those kills before closing
        self._known: tuple[str, asyncssh.SSHKnownHosts] | None = None
        self._keys: Sequence[asyncssh.SSHKeyPair] | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # -- connections ------------------------------------------------------------------------------

    def connect(self, hosts: list[Host]) -> dict[str, str]:
        """Open a connection to each host not connected yet, in parallel; returns {name: reason} for
        the hosts that could not be reached."""
        wanted = [h for h in hosts if h.name not in self.connections]
        if wanted:
            self._load_keys()
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
            c = self.connections[host.name] = _Connection(host, conn)
            await c.warm()

        await asyncio.gather(*(one(h) for h in hosts))

    def _load_keys(self) -> None:
        """The identity file's key pair, loaded once per run (given its path, asyncssh loads it for
        every host). A key that cannot be loaded is the operator's to fix, not an unreachable host."""
        path = self.options.identity_file
        if path is None or self._keys is not None:
            return
        try:
            self._keys = asyncssh.load_keypairs([path])
        except (OSError, asyncssh.KeyImportError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise JunctureError(f"ssh: identity_file {path}: cannot load the key: {reason}") from None

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
        if self._keys is not None:
            kwargs["client_keys"] = self._keys
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
                # Nothing listening is a host that is down, or restarting sshd: not worth 4 s of retries.
                tries = _REFUSED_TRIES if isinstance(exc, ConnectionRefusedError) else _CONNECT_TRIES
                if attempt >= tries - 1:
                    reason = getattr(exc, "reason", None) or exc.strerror if isinstance(exc, OSError) else exc
                    raise _Refused(f"{where}: {reason or type(exc).__name__} (tried {tries} times)") from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if accept and verifier.offered is not None:
                _remember(known_file, host.address, port, verifier.offered)
            return conn
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop every connection and stop the loop, once the kills on their way have arrived. sshd then
        closes the workers' input, and each removes its private directory as it ends. The connections
        are aborted and the loop stopped in one turn of the loop: the callbacks that tear down
        asyncssh's side of them (~1 ms a host, for nothing when the run is over) never run, and the
        sockets close when the pool is let go."""
        if self.signalled:
            self.call(self._settle())

        def drop() -> None:
            for c in self.connections.values():
                c.conn.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(drop)
        self.thread.join(5)
        self.loop.close()
        self.connections.clear()

    async def _settle(self) -> None:
        if self.signals:
            await asyncio.wait(set(self.signals), timeout=10)

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
        try:
            if data:  # stdin carries the data: a session of its own, the script (only paths) as argument
                await c.slot()
                try:
                    done = await c.conn.run(
                        f"exec sh -c {quote(script)}", input=data, encoding=None, stderr=asyncssh.STDOUT
                    )
                finally:
                    await c.free()
                output = done.stdout if isinstance(done.stdout, bytes) else b""
                code = done.exit_status if done.exit_status is not None else 255
                return code, output.decode("utf-8", "replace")
            worker = await c.worker("")
            out = bytearray()

            async def keep(data: bytes | memoryview) -> None:
                out.extend(data)

            worker.channel.stdin.write(script_request(script, worker.token))
            status = await worker.output(keep)
            await c.done(worker, status is not None)
        except (asyncssh.Error, OSError) as exc:
            return 255, f"connection to {name} lost: {exc}"
        return (status if status is not None else 255), out.decode("utf-8", "replace")

    # -- hooks ------------------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: list[str | Upload],
        env: dict[str, str],
        cwd: str | None,
        grace: float,
        container: tuple[str, str] | None = None,
    ) -> RemoteProcess:
        """Start a hook on host `name`, or in a container there: (engine, container name). If the
        connection is lost, the host ends it as a timeout would, with `grace` between TERM and KILL."""
        process = RemoteProcess(self, name, container, env.get(TOKEN), grace)
        self.loop.call_soon_threadsafe(self._start, process, argv, env, cwd)
        return process

    def _start(
        self, process: RemoteProcess, argv: list[str | Upload], env: dict[str, str], cwd: str | None
    ) -> None:
        c = self.connections.get(process.host)
        if c is None:
            process.finish(NOT_STARTED, f"host {process.host} is not connected")
            return
        process.task = self.loop.create_task(process.run(c, argv, env, cwd))


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

    def __init__(
        self,
        pool: SshPool,
        host: str,
        container: tuple[str, str] | None = None,
        token: str | None = None,
        grace: float = 0,
    ) -> None:
        self.pool = pool
        self.host = host
        self.token = token  # in the environment of every process the hook starts (see reaper.py)
        self.grace = grace
        # In a container the hook's group lives inside it: start and signal it through `exec`.
        self.via = f"{container[0]} exec -i {quote(container[1])} " if container else ""
        self.out_fd, self._out_w = os.pipe()
        self.exit_fd, self._exit_w = os.pipe()
        os.set_blocking(self._out_w, False)
        self.code: int | None = None
        self.error = ""
        self.pending: list[str] = []  # signals asked for before the worker was known
        self.task: asyncio.Task[None] | None = None
        self.connection: _Connection | None = None
        self.worker: _Worker | None = None
        self.outputs: bytes | None = None  # the hook's outputs file, read back from the target
        self.ended = False

    async def run(
        self, c: _Connection, argv: list[str | Upload], env: dict[str, str], cwd: str | None
    ) -> None:
        self.connection = c
        code, error = 255, ""
        try:
            worker = self.worker = await c.worker(self.via)
            for signal_name in list(self.pending):
                self._signal(signal_name)
            send = [a for a in argv if isinstance(a, Upload) and a.name not in worker.uploaded]
            worker.channel.stdin.write(hook_request(argv, env, cwd, send, worker.token, self.grace))
            status = await worker.output(self._write)
            if status is not None and OUTPUTS in env.values():
                self.outputs = await worker.outputs()
            reusable = status is not None and not self.pending
            self.ended = True  # from here on a signal could only reach the worker's next request
            if status is not None:
                code = status
                worker.uploaded.update(u.name for u in send)
            else:  # the worker ended with the hook: killed at a timeout, or its shell did not start
                await worker.ready
                await self._write(worker.failure)
                await worker.channel.wait()
                exit_status = worker.channel.exit_status
                code = exit_status if exit_status is not None and exit_status >= 0 else 255
                if worker.channel.exit_signal is not None:
                    code = -_signal_number(worker.channel.exit_signal[0])
            await c.done(worker, reusable)
        except (asyncssh.Error, OSError) as exc:
            error = f"connection to {self.host} lost: {getattr(exc, 'reason', None) or exc}"
        self.finish(code, error)

    async def _write(self, data: bytes | memoryview) -> None:
        """Hand output on to the engine. While the pipe is full this waits, and so does the reading of
        the channel: its window closes and the host's writes block (back-pressure, not memory)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._out_w, view) :]
            except BlockingIOError:
                await self._writable()  # the engine has not read yet
            except BrokenPipeError:
                return

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():  # it may run again before this task resumes and removes it
                ready.set_result(None)

        loop.add_writer(self._out_w, wake)
        try:
            await ready
        finally:
            loop.remove_writer(self._out_w)

    def finish(self, code: int, error: str = "") -> None:
        self.code = code
        self.error = error
        os.close(self._out_w)
        os.write(self._exit_w, b"x")
        os.close(self._exit_w)

    def _signal(self, name: str) -> None:
        """Signal the hook's worker group (the worker goes with its hook: it is not reused) and every
        process that carries the hook's token, in one command on the host; KILL also removes the
        worker's private directory. Once the hook has ended, its worker may run the next hook: then
        only the token's processes (what the hook left) are signalled."""
        worker, connection, ended = self.worker, self.connection, self.ended
        if not ended and name not in self.pending:
            self.pending.append(name)
        if worker is None or connection is None:
            return  # not started yet: `run` signals once it has its worker
        if ended and not self.token:
            return

        async def send() -> None:
            await worker.ready
            if ended:
                script = kill_script(name, None, self.token, None)
            elif worker.pgid is not None or self.token:
                directory = worker.directory if name == "KILL" else None
                script = kill_script(name, worker.pgid, self.token, directory)
            else:
                return
            try:
                await connection.conn.run(f"exec {self.via}sh -c {quote(script)} 2>/dev/null")
            except (asyncssh.Error, OSError):
                pass
            if name == "KILL" and not ended and self.code is None:
                await asyncio.sleep(0.5)  # something outside the group holds the output open
                worker.channel.close()

        task = self.pool.loop.create_task(send())
        self.pool.signals.add(task)
        task.add_done_callback(self.pool.signals.discard)

    # -- the engine's side --------------------------------------------------------------------------

    def terminate(self) -> None:
        self.pool.signalled = True
        self.pool.loop.call_soon_threadsafe(self._signal, "TERM")

    def kill(self) -> None:
        self.pool.signalled = True
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
