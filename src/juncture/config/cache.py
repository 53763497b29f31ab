"""A cache of parsed `juncture.yaml` files, so that most runs never import PyYAML (about 30 ms).

It holds the YAML parse only (data and line numbers), never the validated configuration: every run
still validates. An entry is keyed by the file's path, inode, size and mtime in nanoseconds, and is
written only for a file last modified more than two seconds earlier, so a later edit always changes
the key (git's "racily clean" rule). Any problem reading or writing the cache just means a parse.
"""

from __future__ import annotations

import marshal
import os
import time

from .located import Located

__all__ = ["load_cached", "store"]

_FORMAT = 1
_SETTLED = 2.0  # seconds since the last modification before a parse may be cached


def _key(file: str, st: os.stat_result) -> tuple[int | str, ...]:
    return (_FORMAT, file, st.st_ino, st.st_size, st.st_mtime_ns)


def load_cached(cache: str, file: str, st: os.stat_result) -> Located | None:
    try:
        with open(cache, "rb") as handle:
            key, data, lines = marshal.load(handle)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return Located(file, data, lines) if key == _key(file, st) else None


def store(cache: str, st: os.stat_result, doc: Located) -> None:
    if time.time() - st.st_mtime < _SETTLED:
        return
    try:
        blob = marshal.dumps((_key(doc.file, st), doc.data, doc.lines))
    except ValueError:  # a YAML type marshal cannot hold (dates, sets): not worth caching
        return
    staged = f"{cache}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        with open(staged, "wb") as handle:
            handle.write(blob)
        os.replace(staged, cache)
    except OSError:
        try:
            os.unlink(staged)
        except OSError:
            pass
