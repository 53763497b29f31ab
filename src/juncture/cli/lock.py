"""`juncture lock status|release STAGE`: who holds a stage's deploy lock, and whether it lives; free it.

`status` exits 0 when the stage is unlocked, 1 when it is locked, 3 when the lock is stale (its holder
is gone). `release` frees a stale lock; a lock whose holder is alive, or cannot be checked (it runs on
another machine), only with `--force`. On a stage with hosts the lock lives on the primary host: the
lines say which host that is.
"""

from __future__ import annotations

import argparse

from ..errors import JunctureError
from ..pipeline.local import stage_of
from ..release import lock
from ..release.local import StepFailed
from .common import project_from

_STALE = 3


class _Refused(JunctureError):
    exit_code = 1


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    stage = stage_of(project, args.stage)
    primary = stage.placement.primary
    if primary is None:
        holder = lock.read(stage.deploy_to)
        verdict = lock.check(holder) if holder is not None else None
        if args.action == "release" and holder is not None and verdict is not None:
            _may_release(stage.name, "", holder, verdict, args.force)
            if not lock.release(stage.deploy_to, holder=holder):
                raise _changed(stage.name)
        print(_line(stage.name, args.action, holder, verdict))
        return _code(args.action, verdict)
    from ..pipeline.hosts import host_targets

    with host_targets(project, stage, [primary]) as (targets, unreachable):
        if primary.name in unreachable:
            raise _Refused(
                f"the primary host, which holds the lock, is unreachable: {unreachable[primary.name]}"
            )
        target = targets[primary.name]
        try:
            holder, raw, node = target.read_lock()
            verdict = target.check(holder, node) if holder is not None else None
            if args.action == "release" and holder is not None and verdict is not None:
                _may_release(stage.name, f" on {primary.name}", holder, verdict, args.force)
                if not target.unlock(None, raw):
                    raise _changed(stage.name)
        except StepFailed as exc:
            raise _Refused(str(exc)) from None
    print(f"[{primary.name}] {_line(stage.name, args.action, holder, verdict)}")
    return _code(args.action, verdict)


def _may_release(stage: str, where: str, holder: lock.LockInfo, verdict: lock.Verdict, force: bool) -> None:
    """Refuse to free a lock whose holder may still be deploying, unless forced."""
    if verdict.state == "stale" or force:
        return
    why = verdict.reason if verdict.state == "unknown" else f"its holder, pid {holder.pid}, is alive"
    raise _Refused(
        f"stage {stage}: not releasing the lock{where} {holder.describe()} ({why}; "
        f"`juncture lock release --force {stage}` frees it anyway)"
    )


def _changed(stage: str) -> JunctureError:
    return _Refused(f"stage {stage}: the lock changed while it was being released; look again")


def _code(action: str, verdict: lock.Verdict | None) -> int:
    if action == "release" or verdict is None:
        return 0
    return _STALE if verdict.state == "stale" else 1


def _line(stage: str, action: str, holder: lock.LockInfo | None, verdict: lock.Verdict | None) -> str:
    if holder is None or verdict is None:
        return f"stage {stage}: " + ("unlocked" if action == "status" else "not locked")
    if action == "status":
        if verdict.state == "stale":
            return f"stage {stage}: stale ({verdict.reason}), {holder.describe()}"
        unknown = f" ({verdict.reason})" if verdict.state == "unknown" else ""
        return f"stage {stage}: locked, {holder.describe()}{unknown}"
    why = f"stale: {verdict.reason}" if verdict.state == "stale" else "--force"
    return f"stage {stage}: released the lock {holder.describe()} ({why})"
