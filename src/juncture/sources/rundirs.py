"""Find the hook files of an event across layers, run-parts style.

In each layer (base first) an event may have a flat executable `<event>` (Kamal's `.kamal/hooks/pre-deploy`)
and a run-parts directory `<event>.d/`; a ':' in an event name is a directory level on disk
(`deploy:updated` -> `deploy/updated.d/`). The flat file is the event's main hook and runs first; the files in
`<event>.d/` are drop-ins that run after it, in byte order of their names. Across layers, files merge by
name: a same-named file in a later layer replaces the earlier one, and a symlink to /dev/null masks it.
"""

from __future__ import annotations

import os
import re
import stat

from .._util.record import record, replace
from ..model.event import event_name_problem, event_path
from ..model.hook import Command

__all__ = ["Discovery", "Hook", "Skipped", "discover", "discover_all", "name_problem"]

LEFTOVER_SUFFIXES = (
    "~",
    ".sample",
    ".bak",
    ".orig",
    ".swp",
    ".dpkg-old",
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-tmp",
    ".rpmnew",
    ".rpmsave",
)
# run-parts accepts [A-Za-z0-9_-]+; dots are accepted as well (`10-migrate.sh`).
_VALID_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@record
class Hook:
    event: str
    name: str  # the merge key: the file name in `<event>.d/`, or the event name for a flat file
    path: str
    layer: int  # index into the layers, base = 0
    flat: bool
    replaces: tuple[str, ...] = ()  # paths of same-named files in earlier layers
    command: Command | None = None  # a config task's command (`path` is then where it was configured)

    @property
    def label(self) -> str:
        if self.command is not None:
            return f"task {self.name}"
        return self.event if self.flat else f"{self.event}/{self.name}"


@record
class Skipped:
    path: str
    code: str  # name | not-executable | broken-symlink | not-regular | masked | hidden-by-override
    reason: str
    event: str | None = None


@record
class Discovery:
    hooks: dict[str, tuple[Hook, ...]]  # event -> hooks in run order
    skipped: tuple[Skipped, ...]
    sources: dict[str, tuple[str, ...]]  # event -> its flat files and `.d` directories, in layer order


def name_problem(name: str) -> str | None:
    """Why a file named `name` is not run, or None: hidden, editor/package leftover, odd characters."""
    if name.startswith("."):
        return "hidden file (leading '.')"
    leftover = _leftover(name)
    if leftover:
        return leftover
    if not _VALID_NAME.match(name):
        return "name has characters other than letters, digits, '_', '-' and '.'"
    return None


def _leftover(name: str) -> str | None:
    for suffix in LEFTOVER_SUFFIXES:
        if name.endswith(suffix):
            return f"editor or package leftover ('{suffix}')"
    return None


def _classify(path: str) -> tuple[str, str] | None:
    """None when `path` is runnable, else (code, reason). `masked` for a symlink to /dev/null."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "broken-symlink", f"broken symlink to {os.readlink(path)}"
        return "missing", "does not exist"
    except OSError as exc:
        return "unreadable", f"cannot stat: {exc.strerror}"
    if stat.S_ISCHR(st.st_mode) and os.path.islink(path) and os.path.realpath(path) == os.devnull:
        return "masked", "masked (symlink to /dev/null)"
    if stat.S_ISFIFO(st.st_mode):
        return "not-regular", "a FIFO, not a regular file"
    if stat.S_ISDIR(st.st_mode):
        return "not-regular", "a directory, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "not-regular", "not a regular file"
    if not (st.st_mode & 0o111 and os.access(path, os.X_OK)):
        return "not-executable", "not executable (chmod +x to enable)"
    return None


def discover(layers: tuple[str, ...], event: str) -> tuple[tuple[Hook, ...], list[Skipped]]:
    """The hooks of `event` in run order, and the files that were found but will not run."""
    skipped: list[Skipped] = []
    flats: list[tuple[str, Hook | None]] = []
    drop_ins: dict[str, list[tuple[str, Hook | None]]] = {}
    for index, layer in enumerate(layers):
        path = os.path.join(layer, event_path(event))
        if os.path.lexists(path) and not os.path.isdir(path):
            flats.append((path, _consider(event, event, path, index, True, skipped)))
        directory = path + ".d"
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            skipped.append(Skipped(directory, "unreadable", f"cannot list: {exc.strerror}", event))
            continue
        for name in entries:
            entry = os.path.join(directory, name)
            problem = name_problem(name)
            if problem:
                skipped.append(Skipped(entry, "name", problem, event))
            else:
                drop_ins.setdefault(name, []).append(
                    (entry, _consider(event, name, entry, index, False, skipped))
                )

    ordered = [_winner(flats, skipped)] if flats else []
    ordered += [_winner(drop_ins[name], skipped) for name in sorted(drop_ins, key=os.fsencode)]
    return tuple(hook for hook in ordered if hook is not None), skipped


def _winner(candidates: list[tuple[str, Hook | None]], skipped: list[Skipped]) -> Hook | None:
    """The same-named file of the last layer wins; if it cannot run (or masks), nothing runs."""
    last_path, hook = candidates[-1]
    earlier = tuple(path for path, _ in candidates[:-1])
    if hook is None:
        for path, loser in candidates[:-1]:
            if loser is not None:
                skipped.append(
                    Skipped(path, "overridden", f"replaced by {last_path}, which does not run", loser.event)
                )
        return None
    return replace(hook, replaces=earlier) if earlier else hook


def _consider(
    event: str, name: str, path: str, layer: int, flat: bool, skipped: list[Skipped]
) -> Hook | None:
    problem = _classify(path)
    if problem is None:
        return Hook(event, name, path, layer, flat)
    skipped.append(Skipped(path, problem[0], problem[1], event))
    return None


def discover_all(layers: tuple[str, ...]) -> Discovery:
    """Every event that has files in some layer, with its hooks; for `list` and `check`."""
    sources: dict[str, list[str]] = {}
    skipped: list[Skipped] = []
    for layer in layers:
        _scan(layer, "", sources, skipped)
    hooks: dict[str, tuple[Hook, ...]] = {}
    for event in sorted(sources, key=os.fsencode):
        hooks[event], event_skipped = discover(layers, event)
        skipped.extend(event_skipped)
    return Discovery(hooks, tuple(skipped), {event: tuple(paths) for event, paths in sources.items()})


def _scan(directory: str, namespace: str, sources: dict[str, list[str]], skipped: list[Skipped]) -> None:
    """Collect the events under `directory`; a directory without `.d` is a namespace (`deploy/`)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        is_dir = entry.is_dir()
        base = entry.name[:-2] if is_dir and entry.name.endswith(".d") else entry.name
        problem = name_problem(entry.name) if entry.name.startswith(".") else None
        problem = problem or _leftover(entry.name)
        if not problem and ":" in entry.name:
            problem = f"':' in a file name: spell it as a directory level ({entry.name.replace(':', '/')})"
        problem = problem or event_name_problem(namespace + base)
        if problem:
            skipped.append(Skipped(entry.path, "name", problem))
        elif is_dir and base == entry.name:
            _scan(entry.path, f"{namespace}{base}:", sources, skipped)
        else:
            sources.setdefault(namespace + base, []).append(entry.path)
