"""A hook in a container on this machine: `podman|docker exec -i NAME sh -s`, the hook script on stdin.

Killing the exec client never stops the process inside the container, so a timeout signals the hook's
process group inside it through a second `exec` (`sh -c 'kill -TERM -PGID'`: the shell's own kill, as
Debian's /bin/kill misreads `-PGID`). The group is the one the script reports on stderr before it execs
the hook (the exec'd shell leads its own group); anything else on stderr is the engine's own error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile

from .remote_script import PGID_MARK

__all__ = ["ContainerProcess"]


class ContainerProcess:
    def __init__(self, engine: str, name: str, script: bytes) -> None:
        self.engine = engine
        self.name = name
        self.error = ""
        self._killers: list[subprocess.Popen[bytes]] = []
        self._pgid: int | None = None
        with tempfile.TemporaryFile() as stdin:  # any size, never on a command line
            stdin.write(script)
            stdin.seek(0)
            self._popen = subprocess.Popen(
                [engine, "exec", "-i", name, "sh", "-s"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
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
            self._pgid = int(line[len(PGID_MARK) :])

    def _signal_inside(self, name: str) -> None:
        self._read_err()
        if self._pgid is not None:
            self._killers.append(
                subprocess.Popen(
                    [self.engine, "exec", self.name, "sh", "-c", f"kill -{name} -{self._pgid}"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

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
