"""Render configuration values (`run:`, `dir:`, `env:`) as sandboxed Jinja2 templates.

Jinja2 is imported only for a value that contains template syntax, so plain commands cost nothing.
An undefined name is an error that names the file, line and key the value came from.

Jinja's sandbox keeps templates away from Python's internals, not from using up memory and time
(`{{ 'x' * 10**10 }}`, a loop in a loop, a string doubled in a loop). So a rendering here is bounded:
no value it makes may exceed MAX_SIZE characters or items (an operation that could is refused before
it runs), integers stay under MAX_BITS bits, and its work (calls, filters, operators, loop turns,
output) is charged against a budget of MAX_STEPS. Crossing a bound is a template error naming the key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from ..config.deploy import Text
from ..errors import ConfigError

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

__all__ = ["MAX_BITS", "MAX_SIZE", "MAX_STEPS", "render"]

MAX_SIZE = 1 << 20  # characters (or items) of any value a template makes, and of its output
MAX_BITS = 1 << 16  # bits of an integer a template makes (about 19,700 digits)
MAX_STEPS = 50_000  # work units of one rendering: each operation costs 1 + the size it made / 256
MAX_SECONDS = 1.0  # and however cheap its steps, a rendering stops after this long

_ITER, _CONCAT, _OUT, _CAPTURE = "_juncture_iter", "_juncture_concat", "_juncture_out", "_juncture_capture"


class _Limit(Exception):
    """A bound of the rendering was crossed."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise _Limit(f"too much work (more than {MAX_STEPS} steps)")
        if time.monotonic() > self.deadline:
            raise _Limit(f"rendering took more than {MAX_SECONDS:g} s")


_budget: ContextVar[_Budget | None] = ContextVar("juncture_template_budget", default=None)


def render(text: Text, context: Mapping[str, object]) -> str:
    value = text.value
    if "{{" not in value and "{%" not in value and "{#" not in value:
        return value
    import jinja2

    env = _environment()  # before the clock starts: the first one imports Jinja
    token = _budget.set(_Budget())
    try:
        return _render(env, value, context)
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(context))
        raise ConfigError(
            text.file, text.line, text.path, f"template: {exc.message} (known: {names})"
        ) from None
    except jinja2.TemplateError as exc:
        raise ConfigError(text.file, text.line, text.path, f"template: {exc}") from None
    except _Limit as exc:
        raise ConfigError(text.file, text.line, text.path, f"template: {exc}") from None
    except RecursionError:
        raise ConfigError(text.file, text.line, text.path, "template: nested too deeply") from None
    except MemoryError:
        raise ConfigError(text.file, text.line, text.path, "template: out of memory") from None
    except Exception as exc:  # what the template's own expressions raise: 1/0, int('x'), a bad index
        raise ConfigError(text.file, text.line, text.path, f"template: {type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)


def _render(env: SandboxedEnvironment, value: str, context: Mapping[str, object]) -> str:
    tree = env.parse(value)
    _guard(tree)
    tree.set_environment(env)
    chunks: list[str] = []
    size = 0
    for chunk in env.from_string(tree).generate(context):
        size += len(chunk)
        if size > MAX_SIZE:
            raise _Limit(f"the result would be longer than {MAX_SIZE} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _guard(tree: nodes.Template) -> None:
    """Route what the sandbox does not intercept through the budget: each loop's turns (charged with
    the text of its body), `~` concatenation, every `{{ }}` output, and each `{% set %}` block."""
    from jinja2 import nodes

    def call(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
        return nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)

    for node in list(tree.find_all((nodes.For, nodes.Output, nodes.AssignBlock))):
        if isinstance(node, nodes.For):
            text = sum(len(data.data) for data in node.find_all(nodes.TemplateData))
            node.iter = call(_ITER, [cast(nodes.Expr, node.iter), nodes.Const(text)], node.lineno)
        elif isinstance(node, nodes.Output):
            node.nodes = [
                n if isinstance(n, nodes.TemplateData) else call(_OUT, [n], n.lineno) for n in node.nodes
            ]
        elif isinstance(node, nodes.AssignBlock):
            node.filter = nodes.Filter(node.filter, _CAPTURE, [], [], None, None, lineno=node.lineno)
    # Concat nodes last: replacing one in its parent needs the parent's fields.
    for parent in list(tree.find_all(nodes.Node)):
        for field in parent.fields:
            child = getattr(parent, field, None)
            if isinstance(child, nodes.Concat):
                setattr(parent, field, call(_CONCAT, child.nodes, child.lineno))
            elif isinstance(child, list):  # in place: a call made above may hold this very list
                child[:] = [
                    call(_CONCAT, c.nodes, c.lineno) if isinstance(c, nodes.Concat) else c for c in child
                ]


def _spend(value: Any) -> Any:
    budget = _budget.get()
    if budget is not None:
        size = _size(value)
        if size > MAX_SIZE:
            raise _Limit(f"a value longer than {MAX_SIZE} characters or items")
        budget.spend(1 + size // 256)
    return value


def _size(value: Any, top: bool = False, depth: int = 0) -> int:
    """An upper bound of what `value` weighs, in characters or items; stops counting past MAX_SIZE.
    An integer given to a call (`top`) counts as its magnitude: it may be a width or a count."""
    kind = type(value)
    if kind is str or kind is bytes or kind is range or kind is bytearray:
        return len(value)
    if kind is bool or value is None:
        return 1
    if isinstance(value, str | bytes):  # Markup and other subclasses
        return len(value)
    if isinstance(value, int):
        if top:
            return min(abs(value), MAX_SIZE + 1)
        return value.bit_length() // 3 + 1
    if isinstance(value, list | tuple | set | frozenset | dict):
        if depth > 20:
            return MAX_SIZE + 1
        total = len(value)
        items: Iterable[Any] = value.items() if isinstance(value, dict) else value
        for item in items:
            total += _size(item, False, depth + 1)
            if total > MAX_SIZE:
                break
        return total
    return 1


# Patterns as text: `re` compiles (and caches) them on first use, not at every start of juncture.
_PERCENT = r"%[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?"  # a %-conversion's width and precision
_SPEC = r"\{[^{}]*:([^{}]*)\}"  # a str.format field's spec
_NESTED = r"\{[^{}]*:[^{}]*\{"  # a spec with a field inside: `{:{}}`
_FORMATS = frozenset({"format", "format_map", "%"})
_SIZED = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "batch", "slice", "safe_range"}
)
_MULTIPLYING = frozenset({"expandtabs", "indent"})  # their whole-number argument multiplies the size


def _widths(fmt: str) -> tuple[int, bool]:
    """The largest width or precision a format string writes (capped), and whether it takes one
    from its arguments (`%*d`, `{:{}}`)."""
    numbers = [n for match in re.finditer(_PERCENT, fmt) for n in match.groups() if n]
    numbers += [n for spec in re.findall(_SPEC, fmt) for n in re.findall(r"\d+", spec)]
    star = "*" in numbers or re.search(_NESTED, fmt) is not None
    digits = [n for n in numbers if n != "*"]
    if any(len(n) > 7 for n in digits):
        return MAX_SIZE + 1, star
    return max((int(n) for n in digits), default=0), star


def _estimate(name: str, subject: Any, given: Iterable[Any]) -> int:
    """An upper bound of the size of `subject.name(*given)`, of the filter `subject|name(*given)` or of
    `subject % given`. A whole number counts as its magnitude where it can be a width or a count."""
    fmt = subject if isinstance(subject, str) and name in _FORMATS else None
    width, star = _widths(fmt) if fmt is not None else (0, False)
    sized = name in _SIZED or star
    numbers = others = 0
    for value in given:
        if isinstance(value, int) and not isinstance(value, bool):
            numbers += _size(value, top=sized)
        else:
            others += _size(value, top=False)
    if isinstance(subject, str | bytes):
        factor = 1 + others + (numbers if name in _MULTIPLYING else 0)
        return len(subject) * factor + numbers + width
    return _size(subject, False) + others + numbers


def _checked(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if _estimate(name, subject, (*args, *kwargs.values())) > MAX_SIZE:
        raise _Limit(f"{name}() could make a value longer than {MAX_SIZE} characters or items")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (a filter) with its result bounded; the value it filters is its first argument
    that is not Jinja's context, eval context or environment (see jinja2.utils.pass_*)."""
    from functools import wraps

    passes = getattr(function, "jinja_pass_arg", None) is not None

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        subject, rest = (args[1], args[2:]) if passes else (args[0], args[1:])
        if name == "sum" and not isinstance(kwargs.get("start", 0), int | float):
            raise _Limit("sum() adds numbers only")  # adding lists one by one takes quadratic time
        _checked(name, subject, rest, kwargs)
        return _spend(function(*args, **kwargs))

    return bounded


def _iterate(items: Any, text: int) -> Iterator[Any]:
    budget = _budget.get()
    cost = 1 + text // 256
    for item in items:
        if budget is not None:
            budget.spend(cost)
        yield item


def _concat(*values: Any) -> str:
    if sum(_size(v, False) for v in values) > MAX_SIZE:
        raise _Limit(f"a string longer than {MAX_SIZE} characters")
    return str(_spend("".join(str(v) for v in values)))


def _capture(value: Any) -> Any:
    return _spend(value)


@cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class Bounded(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return _spend(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            if __obj is _iterate or __obj is _concat:  # ours: they charge for themselves
                return super().call(__context, __obj, *args, **kwargs)
            if __obj is _spend:
                return _spend(args[0])
            method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
            subject = getattr(method, "__self__", None)
            name = getattr(method, "__name__", "")
            # A method of a built-in value can multiply sizes; other calls (macros) are checked after.
            builtin = isinstance(subject, str | bytes | list | dict | set)
            if builtin or name in _SIZED:
                _checked(name, subject if builtin else (), args, kwargs)
            return _spend(super().call(__context, __obj, *args, **kwargs))

    # keep_trailing_newline: a multi-line `run: |` command keeps its last line intact.
    env = Bounded(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters[_CAPTURE] = _capture
    env.globals.pop("lipsum", None)  # text by the paragraph: nothing a deploy needs
    env.globals.update({_ITER: _iterate, _CONCAT: _concat, _OUT: _spend})
    return env


def _check_binop(operator: str, left: Any, right: Any) -> None:
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if operator == "**" and whole(left) and whole(right):
        if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_BITS:
            raise _Limit(f"an integer of more than {MAX_BITS} bits")
    elif operator == "*" and whole(left) and whole(right):
        if left.bit_length() + right.bit_length() > MAX_BITS:
            raise _Limit(f"an integer of more than {MAX_BITS} bits")
    elif operator == "*" and (whole(left) or whole(right)):
        count, items = (left, right) if whole(left) else (right, left)
        if count > 0 and _size(items, False) * count > MAX_SIZE:
            raise _Limit(f"a value longer than {MAX_SIZE} characters or items")
    elif operator == "+" and not (isinstance(left, int | float) and isinstance(right, int | float)):
        if _size(left, False) + _size(right, False) > MAX_SIZE:
            raise _Limit(f"a value longer than {MAX_SIZE} characters or items")
    elif operator == "%" and isinstance(left, str):
        given = right.values() if isinstance(right, dict) else right if isinstance(right, tuple) else (right,)
        if _estimate("%", left, given) > MAX_SIZE:
            raise _Limit(f"a string longer than {MAX_SIZE} characters")
