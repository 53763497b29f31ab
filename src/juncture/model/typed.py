"""Typed events for Python callers, like mpd's Swift events.

    class EventProjectPreStart(Event):
        failure = "abort"
        timeout = 30
        project: str
        runtime: str = "php"

    fire(EventProjectPreStart(project="shop"), verb="start")

The event's name is the class name without the `Event` prefix, kebab-cased (`project-pre-start`);
its annotated attributes are context fields and reach hooks as `<PREFIX><FIELD>` variables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar, dataclass_transform

from .event import (
    DEFAULT_GRACE,
    DEFAULT_TIMEOUT,
    FAILURE_MODES,
    LEFTOVERS_MODES,
    STDIN_MODES,
    EventSpec,
    FieldSpec,
    event_name_for_class,
    event_name_problem,
)

__all__ = ["Event", "env_value"]


def env_value(value: Any) -> str:
    """How a context value is spelled in an environment variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ",".join(env_value(item) for item in value)
    return str(value)


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Event:
    """Base class of typed events; subclasses are frozen keyword-only dataclasses."""

    event_name: ClassVar[str] = ""
    audience: ClassVar[tuple[str, ...]] = ("local",)
    failure: ClassVar[str] = "abort"
    timeout: ClassVar[float] = DEFAULT_TIMEOUT
    grace: ClassVar[float] = DEFAULT_GRACE
    revision: ClassVar[int] = 1
    parallel: ClassVar[int] = 1
    stdin: ClassVar[str] = "null"
    leftovers: ClassVar[str] = "keep"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_name" not in cls.__dict__:
            cls.event_name = event_name_for_class(cls.__name__)
        problem = event_name_problem(cls.event_name)
        if problem is None and cls.failure not in FAILURE_MODES:
            problem = f"failure must be one of {', '.join(FAILURE_MODES)}, not {cls.failure!r}"
        if problem is None and cls.stdin not in STDIN_MODES:
            problem = f"stdin must be one of {', '.join(STDIN_MODES)}, not {cls.stdin!r}"
        if problem is None and cls.leftovers not in LEFTOVERS_MODES:
            problem = f"leftovers must be one of {', '.join(LEFTOVERS_MODES)}, not {cls.leftovers!r}"
        if problem is None and (cls.timeout <= 0 or cls.parallel < 1 or cls.revision < 1):
            problem = "timeout must be > 0, parallel and revision >= 1"
        if problem:
            raise TypeError(f"{cls.__qualname__}: {problem}")
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    @classmethod
    def spec(cls) -> EventSpec:
        fields = tuple(
            FieldSpec(
                name=f.name,
                required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                default=None if f.default is dataclasses.MISSING else env_value(f.default),
            )
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
        return EventSpec(
            name=cls.event_name,
            revision=cls.revision,
            failure=cls.failure,
            timeout=float(cls.timeout),
            grace=float(cls.grace),
            audience=tuple(cls.audience),
            parallel=cls.parallel,
            stdin=cls.stdin,
            leftovers=cls.leftovers,
            fields=fields,
            description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            source=f"python: {cls.__module__}.{cls.__qualname__}",
        )

    def context(self) -> dict[str, str]:
        """The context fields as environment values, keyed by field name."""
        return {f.name: env_value(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
