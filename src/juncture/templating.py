"""Render configuration values (`run:`, `dir:`, `env:`) as sandboxed Jinja2 templates.

Jinja2 is imported only for a value that contains template syntax, so plain commands cost nothing.
An undefined name is an error that names the file, line and key the value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from .config.deploy import Text
from .errors import ConfigError

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

__all__ = ["render"]


def render(text: Text, context: Mapping[str, object]) -> str:
    value = text.value
    if "{{" not in value and "{%" not in value and "{#" not in value:
        return value
    import jinja2

    try:
        return _environment().from_string(value).render(context)
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(context))
        raise ConfigError(
            text.file, text.line, text.path, f"template: {exc.message} (known: {names})"
        ) from None
    except jinja2.TemplateError as exc:
        raise ConfigError(text.file, text.line, text.path, f"template: {exc}") from None


@cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # keep_trailing_newline: a multi-line `run: |` command keeps its last line intact.
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
