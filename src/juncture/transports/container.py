"""A hook in a container on this machine: `podman|docker exec -i NAME sh -s`, the hook script on stdin.

Killing the exec client never stops the process inside the container, so a timeout signals the hook's
process group inside it through a second `exec` (`sh -c 'kill -TERM -PGID'`: the shell's own kill, as
Debian's /bin/kill misreads `-PGID`), and with it every process carrying the hook's token. The group and
the session's private directory are the ones the script reports on stderr before it runs the hook (the
exec'd shell leads its own group); anything else on stderr is the engine's own error.

The script's standard input stays open until the hook is reaped: if juncture dies, the exec client sees
its end, the container's shell too, and the session's lifeline ends the hook (see remote_script).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from .shell import PGID_MARK, kill_script, private_directory

__all__ = ["ContainerProcess"]


def _feed(fd: int, data: bytes) -> None:
    """Write `data` to the exec client's stdin (any size: a thread, not the engine's loop, waits)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:  # the client ended (the container is missing): reap says why
        pass


class ContainerProcess:
    def __init__(self, engine: str, name: str, script: bytes, token: str | None = None) -> None:
        self.engine = engine
        self.name = name
        self.token = token
        self.error = ""
        self._killers: list[subprocess.Popen[bytes]] = []
        self._pgid: int | None = None
        self._directory: str | None = None
        stdin, self._stdin = os.pipe()  # both ends close on exec: only the client gets the read end
        try:
            self._popen = subprocess.Popen(
                [engine, "exec", "-i", name, "sh", "-s"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            os.close(self._stdin)
            raise
        finally:
            os.close(stdin)
        self._feeder = threading.Thread(target=_feed, args=(self._stdin, script), daemon=True)
        self._feeder.start()
        assert self._popen.stdout is not None and self._popen.stderr is not None
        self.out_fd = self._popen.stdout.fileno()
        self._err = self._popen.stderr
        os.set_blocking(self._err.fileno(), False)
        self._err_data = b""
        self.exit_fd = os.pidfd_open(self._popen.pid)

    def _read_err(self) -> None:
        try:
            while chunk := os.read(self._err.fileno(), 65536):
                self._err_data += chunk
        except BlockingIOError:
            pass
        if self._pgid is None and self._err_data.startswith(PGID_MARK) and b"\n" in self._err_data:
            line, _, self._err_data = self._err_data.partition(b"\n")
            pgid, _, directory = line[len(PGID_MARK) :].decode("utf-8", "replace").partition(" ")
            self._pgid = int(pgid)
            self._directory = private_directory(directory)

    def _signal_inside(self, name: str) -> None:
        """`name` to the hook's group and its token's processes; KILL also removes the private
        directory. Once the session has ended, its group id may be another's: only the token then."""
        self._read_err()
        pgid = None if self._ended() else self._pgid
        if pgid is None and not self.token:
            return
        directory = self._directory if name == "KILL" else None
        self._killers.append(
            subprocess.Popen(
                [self.engine, "exec", self.name, "sh", "-c", kill_script(name, pgid, self.token, directory)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def _ended(self) -> bool:
        """Whether the client has exited, without reaping it (its pid must not be reused before reap)."""
        try:
            return os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def terminate(self) -> None:
        self._signal_inside("TERM")

    def kill(self) -> None:
        self._signal_inside("KILL")
        for killer in self._killers:  # the group is gone before the client is let go
            killer.wait()
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> int:
        code = self._popen.wait()
        os.close(self.exit_fd)
        self._feeder.join(1)  # done once the client has ended, unless something else holds its stdin
        if not self._feeder.is_alive():  # else the fd stays theirs: closing it could hand it to a new file
            os.close(self._stdin)
        self._read_err()
        for killer in self._killers:
            killer.wait()
        left = self._err_data.decode("utf-8", "replace").strip()
        if left and self._pgid is None:  # the engine could not start the hook: say why
            self.error = f"{self.engine} exec {self.name}: {left.splitlines()[-1]}"
        self._err.close()
        return code

    def close_output(self) -> None:
        if self.out_fd >= 0:
            assert self._popen.stdout is not None
            self._popen.stdout.close()
            self.out_fd = -1
