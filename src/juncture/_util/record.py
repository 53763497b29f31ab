"""Records: what `@dataclass(frozen=True)` gives this package, at a fraction of its import-time cost.

`dataclasses` imports `inspect` and compiles five or six functions per class: about 45 ms of every run
for juncture's 33 classes on a 2-CPU machine, a third of what a deploy spends beyond copying files. A
record compiles one `__init__` per class and shares a generic `__repr__`, `__eq__` and `__hash__`.

    @record
    class Host:
        name: str
        roles: tuple[str, ...] = ()
        seen: list[str] = field(default_factory=list)

Fields are the class's own annotations, in order, but `ClassVar`s; there is no inheritance of fields.
`@record(frozen=False)` makes a mutable record (unhashable, like a mutable dataclass).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["FrozenError", "asdict", "field", "fields", "record", "replace"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


class FrozenError(AttributeError):
    """Assigning to a field of a frozen record."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], T]) -> T:
    """A default made fresh for each record, as `dataclasses.field(default_factory=...)`."""
    return _Factory(default_factory)  # type: ignore[return-value]


@overload
def record(cls: C, /) -> C: ...
@overload
def record(*, frozen: bool = True) -> Callable[[C], C]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: C | None = None, /, *, frozen: bool = True) -> C | Callable[[C], C]:
    if cls is None:
        return lambda cls: _build(cls, frozen)
    return _build(cls, frozen)


def _build(cls: C, frozen: bool) -> C:
    names = [
        name
        # The class's own annotations only (inspect.get_annotations would import inspect).
        for name, annotation in cls.__dict__.get("__annotations__", {}).items()  # noqa: RUF063
        if not str(annotation).startswith(("ClassVar", "typing.ClassVar"))
    ]
    params: list[str] = []
    lines: list[str] = []
    scope: dict[str, Any] = {}
    for name in names:
        default = cls.__dict__.get(name, _Factory)
        if isinstance(default, _Factory):
            scope[f"_f_{name}"] = default.make
            params.append(f"{name}=_FACTORY")
            lines.append(f" d[{name!r}] = _f_{name}() if {name} is _FACTORY else {name}")
            delattr(cls, name)
        else:
            if default is not _Factory:
                scope[f"_d_{name}"] = default
                params.append(f"{name}=_d_{name}")
            else:
                params.append(name)
            lines.append(f" d[{name!r}] = {name}")
    # Writing to __dict__ is what lets a frozen record set its own fields, and is faster than setattr.
    source = f"def __init__(self, {', '.join(params)}):\n d = self.__dict__\n" + "\n".join(lines or [" pass"])
    scope["_FACTORY"] = _Factory
    exec(source, scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    members = {
        "__init__": init,
        "__record_fields__": tuple(names),
        "__record_values__": attrgetter(*names) if names else (lambda self: ()),
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash if frozen else None,
    }
    if frozen:
        members |= {"__setattr__": _refuse, "__delattr__": _refuse}
    for name, value in members.items():
        setattr(cls, name, value)
    return cls


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_fields__)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: Any) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    values: Callable[[Any], Any] = self.__class__.__record_values__
    return bool(values(self) == values(other))


def _hash(self: Any) -> int:
    values: Callable[[Any], Any] = self.__class__.__record_values__
    return hash(values(self))


def _refuse(self: Any, name: str, *value: Any) -> None:
    raise FrozenError(f"cannot assign to field {name!r} of a frozen {type(self).__qualname__}")


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of a record with some fields changed."""
    values = asdict(obj)
    values.update(changes)
    return type(obj)(**values)


def fields(cls: type) -> tuple[str, ...]:
    """A record class's field names, in order."""
    names: tuple[str, ...] = cls.__record_fields__  # type: ignore[attr-defined]
    return names


def asdict(obj: Any) -> dict[str, Any]:
    """A record's fields by name (not recursive: nested records stay records)."""
    return {name: getattr(obj, name) for name in fields(type(obj))}
