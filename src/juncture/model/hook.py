"""What a config task runs: one process, with its own directory, environment and timeout. Pure data."""

from __future__ import annotations

from .._util.record import record

__all__ = ["Command"]


@record
class Command:
    argv: tuple[str, ...]
    cwd: str | None = None  # None: the plan's directory
    env: tuple[tuple[str, str], ...] = ()  # added to the plan's environment
    timeout: float | None = None  # None: the event's
    # The task invocations this command belongs to, outermost first: (id, continue_on_error). When a
    # command fails, every invocation up to the nearest tolerant one counts as failed and the rest of
    # its commands and after-hooks are skipped; without a tolerant one, the event's failure mode applies.
    scope: tuple[tuple[int, bool], ...] = ()
    script: str | None = None  # inline script text: written to a private file whose path ends argv
    suffix: str = ""  # of that file, for interpreters that look at it
    file: str | None = None  # a script file that ends argv (uploaded when the command runs on a host)
