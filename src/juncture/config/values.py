"""Checks of single configuration values; each error names the file, line and key path."""

from __future__ import annotations

from typing import Any

from .located import Located

__all__ = ["kind", "mapping", "scalar", "seconds", "string", "string_list"]


def mapping(doc: Located, value: Any, path: tuple[str, ...], allowed: tuple[str, ...] | None) -> None:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping, got {kind(value)}")
    if allowed is None:
        return
    for key in value:
        if key not in allowed:
            import difflib  # only on the error path

            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid keys: {', '.join(allowed)})"
            raise doc.error((*path, str(key)), f"unknown key{hint}")


def string(doc: Located, value: Any, path: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise doc.error(path, f"expected a string, got {kind(value)}")
    return value


def scalar(doc: Located, value: Any, path: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise doc.error(path, f"expected a string or number, got {kind(value)}")


def seconds(doc: Located, value: Any, path: tuple[str, ...], zero_ok: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise doc.error(path, "expected a number of seconds" + (" >= 0" if zero_ok else " > 0"))
    return float(value)


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def string_list(doc: Located, value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
    """A list of strings; a single string is a list of one."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise doc.error(path, f"expected a string or a list of strings, got {kind(value)}")
    return tuple(string(doc, item, (*path, str(i))) for i, item in enumerate(value))
