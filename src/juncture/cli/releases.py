"""`juncture releases STAGE`: the releases on a stage's target, which is current, what each holds.

On a stage with hosts, each host's releases under a `[host] deploy_to` header, read side by side.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..pipeline.local import stage_of
from ..project import Project
from ..release.local import LocalTarget, StepFailed
from .common import project_from

if TYPE_CHECKING:
    from ..config.deploy import Stage
    from ..release.remote import RemoteTarget


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    stage = stage_of(project, args.stage)
    if stage.placement.hosts:
        return _on_hosts(project, stage)
    print("\n".join(_lines(LocalTarget(stage.deploy_to))))
    return 0


def _lines(target: LocalTarget | RemoteTarget) -> list[str]:
    current = target.current()
    deployed = {r.release: r for r in target.revisions() if r.action == "deployed"}
    releases = target.releases()
    partials = target.partials()
    if not releases and not partials:
        return [f"no releases in {target.releases_dir}"]
    lines = []
    for name in releases:
        mark = "*" if name == current else " "
        revision = deployed.get(name)
        detail = (
            f"version {revision.fields.get('version', '?')[:12]}  deployed {revision.at} by {revision.fields.get('by', '?')}"
            if revision
            else "never published"
        )
        lines.append(f"{mark} {name}  {detail}")
    for name in partials:
        lines.append(f"  {name}  incomplete (a build was interrupted; the next deploy removes it)")
    if current is None:
        lines.append(f"no current release ({target.current_link} does not exist)")
    elif current not in releases:
        lines.append(f"current points at {current}, which is not in {target.releases_dir}")
    return lines


def _on_hosts(project: Project, stage: Stage) -> int:
    """Exit 1 when a host could not be reached or read: its releases are unknown."""
    from ..pipeline.hosts import host_targets

    hosts = list(stage.placement.hosts)
    with host_targets(project, stage, hosts) as (targets, unreachable):

        def read(target: RemoteTarget) -> list[str] | StepFailed:
            try:
                return _lines(target)
            except StepFailed as exc:  # the connection dropped since
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(len(targets), stage.placement.concurrency))) as pool:
            found = dict(zip(targets, pool.map(read, targets.values()), strict=True))
    code = 0
    for host in hosts:
        if host.name in unreachable:
            print(f"[{host.name}] unreachable: {unreachable[host.name]}")
            code = 1
            continue
        lines = found[host.name]
        if isinstance(lines, StepFailed):
            print(f"[{host.name}] cannot read the releases: {lines}")
            code = 1
            continue
        print(f"[{host.name}] {targets[host.name].deploy_to}")
        print("\n".join(f"  {line}" for line in lines))
    return code
