"""Values that end up in records: revisions.log, the deploy lock, the run history.

revisions.log is one line per deploy, of space-separated `key=value` words, and `history`, `releases`
and the lock messages print one line per record. A value holding a line break or another control
character would forge a record (a fake release line), and a space would forge a field (`release=`),
so such values are refused where they come in: `check` raises a UsageError (exit 2) naming the value.
The writers `escape` what they write as a second line of defence.
"""

from __future__ import annotations

from ..errors import UsageError

__all__ = ["MAX_LENGTH", "check", "escape", "problem"]

MAX_LENGTH = 256


def problem(value: str) -> str | None:
    """Why `value` cannot go into a record, or None."""
    if len(value) > MAX_LENGTH:
        return f"longer than {MAX_LENGTH} characters"
    if value.isprintable() and " " not in value:
        return None
    for char in value:
        if char in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029":
            return "contains a line break"
        if char.isspace():
            return "contains a space"
        if not char.isprintable():
            return f"contains the control character {ascii(char)[1:-1]}"
    return None  # pragma: no cover - isprintable() said otherwise


def check(what: str, value: str) -> str:
    """`value`, or a UsageError naming `what` and why (one line: the value is shown escaped)."""
    why = problem(value)
    if why is not None:
        raise UsageError(f"{what} {value!r} {why}: it is written to revisions.log and the run history")
    return value


def escape(value: str) -> str:
    """`value` with every space and unprintable character written as `\\xNN` (or `\\uNNNN`)."""
    if value.isprintable() and " " not in value:
        return value
    return "".join(char if char.isprintable() and char != " " else _escaped(ord(char)) for char in value)


def _escaped(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
