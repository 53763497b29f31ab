"""`juncture check`: diagnostics before anything runs."""

from __future__ import annotations

import argparse
import sqlite3

from ..diagnostics import diagnose
from ..errors import JunctureError
from ..sources.rundirs import discover_all
from ..state.sqlite import Store
from .common import project_from, relative


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    config = project.config
    try:
        store = Store(project.state_dir)
        remembered = store.revisions()
    except (sqlite3.Error, OSError) as exc:
        raise JunctureError(f"state database under {project.state_dir}/state: {exc}") from None
    try:
        findings = diagnose(project, discover_all(config.layers), remembered)
        store.remember_revisions({name: spec.revision for name, spec in config.events.items()})
    finally:
        store.close()
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    if args.json:
        from ..render.jsonlines import emit

        emit({"findings": [f.as_dict() for f in findings], "errors": errors, "warnings": warnings})
    else:
        for f in findings:
            where = relative(f.file, project.root) + (f":{f.line}" if f.line else "")
            print(f"{f.severity}: {where}: {f.message} [{f.code}]")
        print(f"check: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0
