"""Hide secrets in what a hook prints, however its output is cut into chunks. Pure; no I/O.

What is hidden: every occurrence of a secret, and of each line of a secret of several lines (lines of at
least `MIN_MASKED` bytes that are not blank), so a secret printed line by line with other text between
shows none of its lines either. Occurrences may overlap: every byte of any occurrence is hidden, and each
run of hidden bytes shows as one `***`.

A `Stream` holds back only the end of its input that could still begin an occurrence (the bytes from the
first position where the rest is the start of some pattern: fewer than the longest pattern's length), and
remembers how far an occurrence it has already masked reaches into them. So its output is the same
whatever the chunking, its memory is bounded, and a line shows as soon as it cannot be part of a secret.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MARK", "MIN_MASKED", "Masks", "Stream"]

MIN_MASKED = 3  # shorter secrets (or lines of a secret) would blank out ordinary text
MARK = b"***"


class Masks:
    """The byte strings to hide: a run's secrets and the lines of its secrets of several lines."""

    def __init__(self) -> None:
        self.patterns: tuple[bytes, ...] = ()  # longest first

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def add(self, values: Iterable[str]) -> None:
        found = set(self.patterns)
        for value in values:
            found.update(_patterns(value.encode("utf-8", "surrogateescape")))
        if len(found) != len(self.patterns):
            self.patterns = tuple(sorted(found, key=len, reverse=True))

    def mask(self, data: bytes) -> bytes:
        """`data` as a whole, every occurrence hidden."""
        spans = _spans(data, self.patterns, 0)
        return _render(data, spans, len(data), False)[0] if spans else data

    def stream(self) -> Stream:
        return Stream(self)


class Stream:
    """One hook's output, masked chunk by chunk with the `Masks` as they are when each chunk arrives (a
    secret learned while the hook runs applies to what is still held back)."""

    def __init__(self, masks: Masks) -> None:
        self.masks = masks
        self.held = b""
        self.covered = 0  # how many bytes at the start of `held` an occurrence already hides
        self.masking = False  # the output so far ends with a `***` that `held` may continue

    def feed(self, data: bytes) -> bytes:
        """What of `held + data` is safe to pass on now."""
        buf = self.held + data if self.held else data
        patterns = self.masks.patterns
        cut = _first_partial(buf, patterns)
        if not cut:  # all of it may begin a secret: what hides its start stays as it was
            self.held = buf
            return b""
        out, self.masking, self.covered = _render(buf, _spans(buf, patterns, self.covered), cut, self.masking)
        self.held = buf[cut:]
        return out

    def flush(self) -> bytes:
        """The rest, at the end of the output (what is held is no secret: it was only a beginning)."""
        buf, self.held = self.held, b""
        if not buf:
            return b""
        out, self.masking, self.covered = _render(
            buf, _spans(buf, self.masks.patterns, self.covered), len(buf), self.masking
        )
        return out


def _patterns(secret: bytes) -> set[bytes]:
    found = {secret} if len(secret) >= MIN_MASKED else set()
    if b"\n" in secret:
        for line in secret.split(b"\n"):
            line = line.removesuffix(b"\r")
            if len(line) >= MIN_MASKED and line.strip():
                found.add(line)
    return found


def _first_partial(buf: bytes, patterns: tuple[bytes, ...]) -> int:
    """The first position from which the rest of `buf` is a proper beginning of some pattern (len(buf)
    when none is): an occurrence not yet complete can only start there or later."""
    end = cut = len(buf)
    for pattern in patterns:  # longest first: the window where a beginning may start only narrows
        start = end - len(pattern) + 1
        if start >= cut:
            break
        first = pattern[:1]
        i = buf.find(first, max(start, 0), cut)
        while i >= 0:
            if pattern.startswith(memoryview(buf)[i:]):
                cut = i
                break
            i = buf.find(first, i + 1, cut)
    return cut


def _spans(buf: bytes, patterns: tuple[bytes, ...], covered: int) -> list[tuple[int, int]]:
    """The merged [start, end) ranges of `buf` that occurrences cover (overlapping ones included),
    with the first `covered` bytes already known to be hidden."""
    found = [(0, covered)] if covered else []
    for pattern in patterns:
        i = buf.find(pattern)
        while i >= 0:
            found.append((i, i + len(pattern)))
            i = buf.find(pattern, i + 1)
    if len(found) < 2:
        return found
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged


def _render(buf: bytes, spans: list[tuple[int, int]], cut: int, masking: bool) -> tuple[bytes, bool, int]:
    """`buf[:cut]` with each span shown as one `***` (none at the start when `masking` says the previous
    output ended with one that this span continues); whether the result ends masked; how far the last
    span reaches past `cut`."""
    out: list[bytes] = []
    pos = covered = 0
    for start, end in spans:
        if start >= cut:
            break
        if start > pos:
            out.append(buf[pos:start])
            masking = False
        if not masking:
            out.append(MARK)
            masking = True
        pos = min(end, cut)
        covered = max(end - cut, 0)
    if cut > pos:
        out.append(buf[pos:cut])
        masking = False
    return b"".join(out), masking, covered
