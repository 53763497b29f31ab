"""What an event is: its options and context fields, independent of where it was declared."""

from __future__ import annotations

import re

from .._util.record import record

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_TIMEOUT",
    "EventSpec",
    "FieldSpec",
    "event_name_for_class",
    "event_name_problem",
    "event_path",
]

# Long enough for a hook that waits for CI, like Kamal's sample pre-deploy (72 polls x 10 s = 12 min).
DEFAULT_TIMEOUT = 900.0
# Between SIGTERM and SIGKILL when a hook times out or juncture is interrupted.
DEFAULT_GRACE = 5.0

FAILURE_MODES = ("abort", "continue")
STDIN_MODES = ("null", "inherit")
LEFTOVERS_MODES = ("keep", "kill")  # what a hook that exits by itself leaves running

# Segments separated by ':' (whoosh's `deploy:updated`); on disk each ':' is a directory level.
_EVENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*(:[A-Za-z0-9_][A-Za-z0-9_.@+-]*)*\Z")


def event_name_problem(name: str) -> str | None:
    """Why `name` cannot be an event name (it must be usable as a directory name), or None."""
    if not name:
        return "an event name cannot be empty"
    if len(name) > 128:
        return "an event name is at most 128 characters"
    if not _EVENT_NAME.match(name):
        return (
            f"event name {name!r} must start with a letter, digit or '_' and contain only "
            "letters, digits and _ . : @ + - (it names a hooks directory); each ':' must be followed "
            "by a letter, digit or '_'"
        )
    return None


def event_path(name: str) -> str:
    """Where an event's hooks live under a layer: `deploy:updated` -> `deploy/updated` (+ `.d`).

    A ':' cannot be part of a file name on Windows or in a Git checkout made there, so it is spelled as a
    directory level: `hooks/deploy/updated.d/10-migrate`.
    """
    return name.replace(":", "/")


def event_name_for_class(class_name: str) -> str:
    """`EventProjectPreStart` -> `project-pre-start` (mpd's rule: drop the prefix, kebab-case)."""
    base = class_name.removeprefix("Event") or class_name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", base).lower()


@record
class FieldSpec:
    """A declared context field; it reaches hooks as `<PREFIX><NAME>`."""

    name: str
    required: bool = False
    default: str | None = None
    description: str = ""

    @property
    def env_name(self) -> str:
        return self.name.upper()


@record
class EventSpec:
    """The resolved options of one event."""

    name: str
    revision: int = 1
    failure: str = "abort"
    timeout: float = DEFAULT_TIMEOUT
    grace: float = DEFAULT_GRACE
    audience: tuple[str, ...] = ("local",)
    parallel: int = 1
    stdin: str = "null"
    leftovers: str = "keep"  # kill: also after a normal exit, kill what the hook started
    # None: any context field may be set; a tuple: exactly these (closed set).
    fields: tuple[FieldSpec, ...] | None = None
    description: str = ""
    secrets: tuple[str, ...] = ()  # KV secrets its hooks get as <PREFIX>SECRET_<KEY>
    # Where the options came from: "juncture.yaml:12", "built-in", "python: EventX", "undeclared".
    source: str = "undeclared"
