"""`juncture lock status|release STAGE`: who holds a stage's deploy lock; force it free.

On a stage with hosts the lock lives on the primary host: the lines say which host that is.
"""

from __future__ import annotations

import argparse

from .. import lock
from ..errors import JunctureError
from ..pipeline import stage_of
from ..target import StepFailed
from .common import project_from


class _Unreachable(JunctureError):
    exit_code = 1


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    stage = stage_of(project, args.stage)
    primary = stage.placement.primary
    if primary is None:
        holder = lock.read(stage.deploy_to)
        if args.action == "release" and holder is not None:
            lock.release(stage.deploy_to)
        print(_line(stage.name, args.action, holder))
        return 0
    from ..fleet_pipeline import host_targets

    with host_targets(project, stage, [primary]) as (targets, unreachable):
        if primary.name in unreachable:
            raise _Unreachable(
                f"the primary host, which holds the lock, is unreachable: {unreachable[primary.name]}"
            )
        target = targets[primary.name]
        try:
            holder = target.holder()
            if args.action == "release" and holder is not None:
                target.unlock(None)
        except StepFailed as exc:
            raise _Unreachable(str(exc)) from None
    print(f"[{primary.name}] {_line(stage.name, args.action, holder)}")
    return 0


def _line(stage: str, action: str, holder: lock.LockInfo | None) -> str:
    if action == "status":
        return f"stage {stage}: " + (f"locked, {holder.describe()}" if holder else "unlocked")
    if holder is None:
        return f"stage {stage}: not locked"
    return f"stage {stage}: released the lock {holder.describe()}"
