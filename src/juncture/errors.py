"""Errors that end a command with a one-line reason and a documented exit code."""

from __future__ import annotations

__all__ = ["HOSTS_SKIPPED", "ConfigError", "HookFailed", "Interrupted", "JunctureError", "UsageError"]

# The exit status of a run that did its work on the reachable hosts and skipped unreachable ones
# (`on_unreachable: skip`): not 0, so that CI notices (Ansible exits 4 for unreachable hosts).
HOSTS_SKIPPED = 3


class JunctureError(Exception):
    """Base of every error juncture reports to the user as one line (never a traceback)."""

    exit_code = 2


class UsageError(JunctureError):
    """Bad command-line input or a project that cannot be found."""


class ConfigError(JunctureError):
    """A configuration problem, located by file, line and key path (pre-commit style)."""

    def __init__(self, file: str, line: int | None, path: tuple[str, ...], message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message
        where = f"{file}:{line}" if line else file
        keys = "".join(f" ==> At key: {key}" for key in path[:-1])
        last = f" =====> {path[-1]}: {message}" if path else f" =====> {message}"
        super().__init__(f"{where}:{keys}{last}")


class HookFailed(JunctureError):
    """A hook failed and its event aborted; the message names the event, hook and exit status."""

    exit_code = 1


class Interrupted(JunctureError):
    """juncture received SIGINT or SIGTERM while hooks were running."""

    exit_code = 130
