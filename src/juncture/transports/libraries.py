"""Finding shared libraries without running ldconfig.

asyncssh, as it is imported, asks `ctypes.util.find_library` for liboqs (post-quantum key exchange).
On Linux that runs `ldconfig -p`, and `gcc` when ldconfig has no answer: 100-150 ms here, paid by every
run that touches a host. `find_library` below answers the same question by looking in the directories
the dynamic linker searches (LD_LIBRARY_PATH, /etc/ld.so.conf, the standard and multiarch ones).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sysconfig
from collections.abc import Iterator

__all__ = ["find_library", "quick_find_library"]


def _conf_dirs(path: str = "/etc/ld.so.conf", depth: int = 0) -> list[str]:
    found: list[str] = []
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("include ") and depth < 4:
            for included in sorted(glob.glob(line.split(None, 1)[1])):
                found += _conf_dirs(included, depth + 1)
        elif line.startswith("/"):
            found.append(line)
    return found


def _search_dirs() -> list[str]:
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    standard = ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"]
    if arch:
        standard = [f"/lib/{arch}", f"/usr/lib/{arch}", *standard]
    extra = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    return list(dict.fromkeys([*extra, *_conf_dirs(), *standard]))


def find_library(name: str) -> str | None:
    """The file name of `lib<name>.so.*` (as ctypes.util.find_library gives it), or None."""
    for directory in _search_dirs():
        matches = sorted(glob.glob(os.path.join(glob.escape(directory), f"lib{glob.escape(name)}.so*")))
        versioned = [m for m in matches if ".so." in m] or matches
        if versioned:
            return os.path.basename(versioned[0])
    return None


@contextlib.contextmanager
def quick_find_library() -> Iterator[None]:
    """`ctypes.util.find_library` is `find_library` while this lasts (around one import)."""
    import ctypes.util

    original = ctypes.util.find_library
    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original
