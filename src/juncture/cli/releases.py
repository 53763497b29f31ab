"""`juncture releases STAGE`: the releases on a stage's target, which is current, what each holds."""

from __future__ import annotations

import argparse

from ..pipeline import stage_of
from ..target import LocalTarget
from .common import project_from


def run(args: argparse.Namespace) -> int:
    stage = stage_of(project_from(args), args.stage)
    target = LocalTarget(stage.deploy_to)
    current = target.current()
    deployed = {r.release: r for r in target.revisions() if r.action == "deployed"}
    releases = target.releases()
    if not releases and not target.partials():
        print(f"no releases in {target.releases_dir}")
        return 0
    for name in releases:
        mark = "*" if name == current else " "
        revision = deployed.get(name)
        detail = (
            f"version {revision.fields.get('version', '?')[:12]}  deployed {revision.at} by {revision.fields.get('by', '?')}"
            if revision
            else "never published"
        )
        print(f"{mark} {name}  {detail}")
    for name in target.partials():
        print(f"  {name}  incomplete (a build was interrupted; the next deploy removes it)")
    if current is None:
        print(f"no current release ({target.current_link} does not exist)")
    elif current not in releases:
        print(f"current points at {current}, which is not in {target.releases_dir}")
    return 0
