"""The outputs file a hook appends to (`<PREFIX>OUTPUT`): values for the KV store. Pure functions.

    KEY=VALUE                       a variable in the hook's namespace
    secret KEY=VALUE                a secret
    @NAMESPACE KEY=VALUE            another namespace: app, stage:NAME, host:NAME, job:NAME
    KEY<<DELIM                      a value of several lines, up to a line that is exactly DELIM
    line one
    line two
    DELIM

The prefixes combine (`@host:web-1 secret TOKEN=...`). A malformed line is an error naming its number,
and then nothing of the file is stored.
"""

from __future__ import annotations

import re

from .._util.record import record

__all__ = ["Entry", "OutputsError", "format_entry", "namespace_problem", "parse_outputs", "written_secrets"]

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
NAMESPACE = re.compile(r"(app|(stage|host|job):[A-Za-z0-9_.@+-]+)\Z")


@record
class Entry:
    ns: str | None  # None: the hook's own namespace, chosen by whoever commits
    key: str
    value: str
    secret: bool = False


class OutputsError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def namespace_problem(ns: str) -> str | None:
    if NAMESPACE.match(ns):
        return None
    return f"namespace {ns!r}: expected app, stage:NAME, host:NAME or job:NAME"


def parse_outputs(text: str) -> list[Entry]:
    entries: list[Entry] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if not line.strip():
            continue
        ns, secret, rest = _prefixes(line, number)
        key, sep, value = rest.partition("=")
        heredoc = _heredoc(rest)
        if heredoc is not None:
            key, delimiter = heredoc
            if not delimiter:
                raise OutputsError(number, f"{key}<<: a delimiter must follow <<")
            body: list[str] = []
            start = number
            while True:
                if number >= len(lines):
                    raise OutputsError(start, f"{key}<<{delimiter}: no line {delimiter!r} ends the value")
                if lines[number] == delimiter:
                    number += 1
                    break
                body.append(lines[number])
                number += 1
            value = "\n".join(body)
        elif not sep:
            raise OutputsError(number, f"expected KEY=VALUE or KEY<<DELIMITER, got {line[:60]!r}")
        if not KEY.match(key):
            raise OutputsError(number, f"key {key!r}: letters, digits, _ . - (not starting with a digit)")
        entries.append(Entry(ns, key, value, secret))
    return entries


def written_secrets(text: str) -> list[str]:
    """The secret values in an outputs file that may still be being written (a hook's, while it runs):
    single-line values, and each line so far of a secret of several lines. Errors are left to
    `parse_outputs` at the end."""
    found: list[str] = []
    delimiter: str | None = None
    secret = False
    for number, line in enumerate(text.split("\n"), 1):
        if delimiter is not None:
            if line == delimiter:
                delimiter = None
            elif secret:
                found.append(line)
            continue
        try:
            _, secret, rest = _prefixes(line, number)
        except OutputsError:
            continue
        heredoc = _heredoc(rest)
        if heredoc is not None:
            delimiter = heredoc[1]
        elif secret:
            found.append(rest.partition("=")[2])
    return found


def _heredoc(rest: str) -> tuple[str, str] | None:
    """(KEY, DELIM) of a `KEY<<DELIM` line; None for `KEY=VALUE` (whose value may hold "<<")."""
    head, marker, delimiter = rest.partition("<<")
    return (head, delimiter) if marker and "=" not in head else None


def _prefixes(line: str, number: int) -> tuple[str | None, bool, str]:
    ns = None
    rest = line
    if rest.startswith("@"):
        ns, _, rest = rest[1:].partition(" ")
        problem = namespace_problem(ns)
        if problem:
            raise OutputsError(number, problem)
    secret = rest.startswith("secret ")
    if secret:
        rest = rest[len("secret ") :]
    return ns, secret, rest


def format_entry(entry: Entry) -> str:
    """The lines that `parse_outputs` reads back as `entry`."""
    prefix = (f"@{entry.ns} " if entry.ns else "") + ("secret " if entry.secret else "")
    if "\n" not in entry.value:
        return f"{prefix}{entry.key}={entry.value}\n"
    import secrets

    delimiter = f"JUNCTURE_EOF_{secrets.token_hex(8)}"
    return f"{prefix}{entry.key}<<{delimiter}\n{entry.value}\n{delimiter}\n"
