"""Checks of single configuration values; each error names the file, line and key path."""

from __future__ import annotations

import math
from typing import Any

from .located import Located

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "kind",
    "mapping",
    "scalar",
    "seconds",
    "string",
    "string_list",
    "whole",
]

MAX_SECONDS = 1_000_000  # about 11.5 days: any longer timeout or interval is a mistake
MAX_COUNT = 1_000_000  # revisions, parallel hooks, releases kept, retries, hosts at once


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
    """A finite number of seconds, at most MAX_SECONDS (`.nan` and `.inf` are numbers to YAML)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
        or value > MAX_SECONDS
    ):
        low = ">= 0" if zero_ok else "> 0"
        raise doc.error(path, f"expected a number of seconds {low} and at most {MAX_SECONDS}")
    return float(value)


def whole(doc: Located, value: Any, path: tuple[str, ...], low: int = 1, high: int = MAX_COUNT) -> int:
    if type(value) is not int or not low <= value <= high:
        raise doc.error(path, f"expected a whole number from {low} to {high}")
    return value


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
