"""juncture: runs hooks at the junctures of a deployment lifecycle.

from juncture import Event, fire

class EventProjectPreStart(Event):
    timeout = 30
    project: str

fire(EventProjectPreStart(project="shop"), verb="start")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, HookFailed, Interrupted, JunctureError, UsageError

if TYPE_CHECKING:
    from .api import fire
    from .model.outcome import HookResult, RunResult
    from .model.typed import Event

__all__ = [
    "ConfigError",
    "Event",
    "HookFailed",
    "HookResult",
    "Interrupted",
    "JunctureError",
    "RunResult",
    "UsageError",
    "fire",
]

# Imported on first use, so the command line does not pay for the typed-event machinery.
_LAZY = {
    "fire": "api",
    "Event": "model.typed",
    "HookResult": "model.outcome",
    "RunResult": "model.outcome",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
