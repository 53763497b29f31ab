"""The local target: a hook runs as a child process in a session of its own.

Its own session (and so its own process group) lets a timeout or an interrupt signal everything the hook
started, and keeps the terminal's Ctrl-C away from it: juncture decides what the hook gets.
"""

from __future__ import annotations

import os
import signal
import subprocess

__all__ = ["LocalProcess"]


class LocalProcess:
    """A started hook: `out_fd` carries stdout and stderr together, `exit_fd` polls readable on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, stdin: int | None) -> None:
        read_end, write_end = os.pipe()
        try:
            self._popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.pid = self._popen.pid
        self.out_fd = read_end
        self.exit_fd = os.pidfd_open(self.pid)
        self._reaped = False

    def signal_group(self, signum: int) -> None:
        """Signal the hook's whole process group; safe until `reap`, as the zombie holds the group id."""
        if self._reaped:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def reap(self) -> int:
        """The exit status once `exit_fd` is readable: the exit code, or minus the signal number."""
        code = self._popen.wait()
        self._reaped = True
        os.close(self.exit_fd)
        return code

    def close_output(self) -> None:
        if self.out_fd >= 0:
            os.close(self.out_fd)
            self.out_fd = -1
