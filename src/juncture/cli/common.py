"""Helpers the verbs share."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from ..errors import UsageError
from ..project import Project, load_project

__all__ = ["no_hooks_hint", "parse_assignments", "project_from", "relative", "unexecutable_note"]


def project_from(args: argparse.Namespace) -> Project:
    return load_project(args.directory, args.config)


def parse_assignments(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        if not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise UsageError(f"--set {item!r}: KEY must be letters, digits and _ (it names a variable)")
        values[key] = value
    return values


def relative(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


def unexecutable_note(project: Project, events: Iterable[str]) -> str:
    """The note for the hook files of `events` that exist but lack the execute bit ("2 hooks skipped
    (not executable): see `juncture check`"), or "" when there are none."""
    from ..sources.rundirs import discover

    count = sum(
        skip.code == "not-executable"
        for event in dict.fromkeys(events)
        for skip in discover(project.config.layers, event)[1]
    )
    if not count:
        return ""
    return f"{count} hook{'s' if count > 1 else ''} skipped (not executable): see `juncture check`"


def no_hooks_hint(project: Project, event: str) -> None:
    """For an event that ran nothing: when no one declared it, it is not built in and no file in the
    hook directories bears its name, it is likely a typo; say so on stderr, with the nearest name."""
    if project.known(event):
        return
    from ..sources.rundirs import discover, discover_all

    if discover(project.config.layers, event)[1]:  # its files exist but do not run: not a typo
        return
    config = project.config
    on_disk = discover_all(config.layers).sources
    if event in on_disk:  # its directory is there, empty: not a typo
        return
    import difflib

    from ..model.catalogue import BUILT_IN

    names = {*config.events, *BUILT_IN, *config.deploy.phases, *on_disk}
    near = difflib.get_close_matches(event, sorted(names), n=1)
    hint = f"did you mean {near[0]!r}?" if near else "no event of that name is declared, built in or on disk"
    sys.stdout.flush()
    sys.stderr.write(f"juncture: no hooks for event {event!r} ({hint})\n")
