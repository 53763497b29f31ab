"""`juncture lock status|release STAGE`: who holds a stage's deploy lock; force it free."""

from __future__ import annotations

import argparse

from .. import lock
from ..pipeline import stage_of
from .common import project_from


def run(args: argparse.Namespace) -> int:
    stage = stage_of(project_from(args), args.stage)
    holder = lock.read(stage.deploy_to)
    if args.action == "status":
        print(f"stage {stage.name}: " + (f"locked, {holder.describe()}" if holder else "unlocked"))
        return 0
    if holder is None:
        print(f"stage {stage.name}: not locked")
        return 0
    lock.release(stage.deploy_to)
    print(f"stage {stage.name}: released the lock {holder.describe()}")
    return 0
