"""Parsed configuration data with the line of every key path, for located errors."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["Located"]


class Located:
    """Parsed YAML data with the line number of each key path."""

    def __init__(self, file: str, data: Any, lines: dict[tuple[str, ...], int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line(self, path: tuple[str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        return ConfigError(self.file, self.line(path), path, message)
