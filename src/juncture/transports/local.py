"""The local target: a hook runs as a child process in a session of its own.

Its own session (and so its own process group) lets a timeout or an interrupt signal everything the hook
started, and keeps the terminal's Ctrl-C away from it: juncture decides what the hook gets. What left the
group (`setsid`) is found by the hook's token, and the watchdog kills it all if juncture dies (reaper.py).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from . import reaper

if TYPE_CHECKING:
    import subprocess

__all__ = ["LocalProcess"]


# Python ignores these; a hook must start with the defaults, as subprocess's restore_signals does.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class LocalProcess:
    """A started hook: `out_fd` carries stdout and stderr together, `exit_fd` polls readable on exit.

    `cwd=None` runs it in the current directory with posix_spawn, which converts the environment in C
    (subprocess re-encodes every variable in Python for each hook, a measurable share of a hook's cost);
    posix_spawn cannot change directory, so another `cwd` goes through subprocess.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: str | None, stdin: int | None, grace: float
    ) -> None:
        self.token = env.get(reaper.TOKEN)
        if self.token is not None:
            reaper.arm()
        read_end, write_end = os.pipe()
        # Held until reaped: a Popen dropped while its child runs reaps it in __del__ or a later _cleanup().
        self._popen: subprocess.Popen[bytes] | None = None
        try:
            if cwd is None:
                actions = [(os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)]
                if stdin is not None:
                    actions.insert(0, (os.POSIX_SPAWN_DUP2, stdin, 0))
                spawn = os.posix_spawn if "/" in argv[0] else os.posix_spawnp
                self.pid = spawn(
                    argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=_DEFAULT_SIGNALS
                )
            else:
                import subprocess  # only for a hook with another directory: ~3 ms of start-up otherwise

                self._popen = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=stdin,
                    stdout=write_end,
                    stderr=write_end,
                    start_new_session=True,
                )
                self.pid = self._popen.pid
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._slot = reaper.watch(self.token, self.pid, grace) if self.token is not None else -1
        self.out_fd = read_end
        self.exit_fd = os.pidfd_open(self.pid)
        self._reaped = False

    def signal(self, signum: int) -> None:
        """Signal the hook's whole process group and what left it with the hook's token; safe until
        `reap`, as the zombie holds the group id (also after the hook's exit: `leftovers: kill`)."""
        if not self._reaped:
            reaper.signal_hook(self.pid, self.token, signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def reap(self) -> int:
        """The exit status once `exit_fd` is readable: the exit code, or minus the signal number."""
        if self._popen is not None:
            code = self._popen.wait()
        else:
            code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        self._reaped = True
        os.close(self.exit_fd)
        reaper.unwatch(self._slot)
        return code

    def close_output(self) -> None:
        if self.out_fd >= 0:
            os.close(self.out_fd)
            self.out_fd = -1
