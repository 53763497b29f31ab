"""Retention of `.juncture/logs/<run-id>/`: at the start of each run, the logs of earlier runs beyond
`keep_runs`, or beyond `max_bytes` in all, are removed, the oldest first.

It must cost a run next to nothing: one listdir of `.juncture/logs` and one query of the sizes the store
recorded when each run ended. Only a run directory the store has no size for (a run killed before it
could record one, or one from before retention) is walked, once. The current run's logs, and those of a
run still going on (its process alive), are never removed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sqlite import Store

__all__ = ["DEFAULT_KEEP_RUNS", "DEFAULT_MAX_BYTES", "logged_bytes", "prune_logs"]

DEFAULT_KEEP_RUNS = 50  # earlier runs whose logs are kept, besides the current run's
DEFAULT_MAX_BYTES = 1 << 30  # at most this much in the earlier runs' logs


def is_run_id(name: str) -> bool:
    """A name environment.new_run_id makes (20261121T054300Z-3f9a2c; sorts by time): no regex to
    compile at every start."""
    return (
        len(name) == 23
        and name[8] == "T"
        and name[15:17] == "Z-"
        and (name[:8] + name[9:15]).isdigit()
        and all(c in "0123456789abcdef" for c in name[17:])
    )


def logs_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "logs")


def logged_bytes(state_dir: str, run_id: str) -> int | None:
    """The size of a run's logs; None when it wrote none (most runs: one failed scandir)."""
    return _tree_bytes(os.path.join(logs_dir(state_dir), run_id))


def prune_logs(store: Store, keep_runs: int, max_bytes: int, current: str) -> None:
    """Remove the oldest runs' logs until at most `keep_runs` earlier runs' remain, within `max_bytes`."""
    directory = logs_dir(store.state_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        return  # no logs yet (or none readable: nothing to do either way)
    runs = sorted(name for name in names if is_run_id(name) and name != current)
    if not runs:
        return
    sizes = store.log_sizes()
    unknown = {name: _tree_bytes(os.path.join(directory, name)) or 0 for name in runs if name not in sizes}
    sizes.update(unknown)
    count = len(runs)
    total = sum(sizes[name] for name in runs)
    if count <= keep_runs and total <= max_bytes and not unknown:
        return
    live = store.live_runs(runs)
    removed = []
    for name in runs:  # the oldest first
        if count <= keep_runs and total <= max_bytes:
            break
        if name in live:
            continue
        import shutil

        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        removed.append(name)
        count -= 1
        total -= sizes[name]
    # a size is recorded once its run is over: a live one is still writing
    measured = {name: size for name, size in unknown.items() if name not in removed and name not in live}
    store.logs_changed(measured=measured, removed=removed)


def _tree_bytes(path: str) -> int | None:
    """The bytes of the regular files under `path`; None when it is not a directory."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return None
    total = 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(entry.path) or 0
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass  # removed meanwhile
    return total
