"""Helpers the verbs share."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from ..project import Project, load_project

__all__ = ["parse_assignments", "project_from", "relative"]


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
