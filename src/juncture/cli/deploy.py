"""`juncture deploy STAGE` and `juncture rollback STAGE`: the pipeline on a stage's target."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..errors import HOSTS_SKIPPED
from ..model.recorded import check
from ..model.run import identity
from ..pipeline.local import Pipeline, Step, deploy_steps, rollback_release, rollback_steps, stage_of
from ..plan.fanout import Share
from ..plan.steps import FAILED, ROLLBACK, STEPS
from ..release.local import LocalTarget
from ..render.pipeline import PipelineOutput
from ..sources.rundirs import Hook
from .common import project_from, relative, unexecutable_note

if TYPE_CHECKING:
    from ..pipeline.hosts import FleetPipeline


def run(args: argparse.Namespace) -> int:
    for what, value in (("--version", getattr(args, "version", None)), ("--to", getattr(args, "to", None))):
        if value:
            check(what, value)  # before anything: they are written to revisions.log and the history
    project = project_from(args)
    stage = stage_of(project, args.stage)
    mode = "verbose" if args.verbose else "quiet" if args.quiet else "normal"
    output = PipelineOutput(mode)
    config = project.config.deploy
    kind: type[Pipeline] = Pipeline
    if stage.placement.hosts:
        from ..pipeline.hosts import FleetPipeline

        kind = FleetPipeline
    if args.command == "deploy":
        steps = deploy_steps(config.phases)
        pipeline = kind(
            project,
            stage,
            "deploy",
            identity(),
            output,
            version=args.version,
            skip_hooks=args.skip_hooks,
            dry_run=args.dry_run,
            lock_wait=args.lock_wait,
        )
    else:
        replaced = any(task.replace == ROLLBACK for task in config.tasks.values())
        target = LocalTarget(stage.deploy_to)
        remote = bool(stage.placement.hosts)  # the release is chosen on the primary, once connected
        release = (
            ""
            if (replaced or remote) and args.to is None
            else args.to
            if remote
            else rollback_release(target, args.to)
        )
        steps = rollback_steps()
        pipeline = kind(
            project,
            stage,
            "rollback",
            identity(),
            output,
            release=release,
            rollback_to=args.to,
            version=None if remote else _version_of(target, release),
            skip_hooks=args.skip_hooks,
            dry_run=args.dry_run,
            lock_wait=args.lock_wait,
        )
    if args.dry_run:
        _print_steps(pipeline, steps)
        return 0
    os.chdir(project.root)  # hooks run in the project, as `fire` runs them
    code = pipeline.run(steps, cleanup=getattr(args, "cleanup", False))
    if not args.skip_hooks and mode != "quiet":
        events = [step.event for step in steps if step.event] + (
            [FAILED] if code not in (0, HOSTS_SKIPPED) else []
        )
        note = unexecutable_note(project, events)
        if note:
            output.say(note)
    return code


def _version_of(target: LocalTarget, release: str) -> str | None:
    """The version a release was deployed with, from revisions.log."""
    found = [
        r.fields.get("version") for r in target.revisions() if r.release == release and r.action == "deployed"
    ]
    return found[-1] if found and found[-1] else None


def _print_steps(pipeline: Pipeline, steps: tuple[Step, ...]) -> None:
    if pipeline.stage.placement.hosts:
        _print_fleet_steps(pipeline, steps)  # type: ignore[arg-type]
        return
    root = pipeline.project.root
    output = pipeline.output
    output.started(pipeline)
    for step, plan in pipeline.check_plans(steps):
        if step.action:
            print(f"  {step.phase}  [{STEPS[step.action]}]")
            continue
        if plan is None:
            continue
        _print_hooks(step.event + ("  (before)" if step.part == "before" else ""), plan.hooks, root)
    failed = pipeline.plan(Step(FAILED, FAILED), {"ERROR": ""})
    if failed is not None:
        _print_hooks(f"on failure: {FAILED}", failed.hooks, root)


def _print_hooks(title: str, hooks: tuple[Hook, ...], root: str) -> None:
    print(f"  {title}")
    for hook in hooks:
        print(f"      {hook.label}  {relative(hook.path, root)}")


def _print_fleet_steps(pipeline: FleetPipeline, steps: tuple[Step, ...]) -> None:
    """The steps, and for each hook or task the hosts it would run on; connects to none of them."""
    root = pipeline.project.root
    placement = pipeline.placement
    primary = placement.primary.name if placement.primary is not None else ""
    pipeline.output.started(pipeline)
    pipeline.check_plans(steps)
    rollout = pipeline.verb == "deploy"
    shown = False
    for step in steps:
        each = rollout and pipeline.in_rollout(step)
        if each and not shown:
            shown = True
            batches = pipeline.batches()
            print(f"  rollout in {len(batches)} batch(es): " + " | ".join(", ".join(b) for b in batches))
        suffix = "  (each batch)" if each else ""
        if step.action:
            on = f" on {primary}" if step.action in ("deploy:starting", "unlock") else ""
            print(f"  {step.phase}  [{STEPS[step.action]}{on}]{suffix}")
            continue
        waves = pipeline.waves(step)
        gate = each and step.event == "health_check"
        if not waves and not (gate and placement.health is not None):
            continue
        title = step.event + ("  (before)" if step.part == "before" else "") + suffix
        _print_shares(title + (f", in {_gate(pipeline)}" if gate else ""), waves, root)
    failed = pipeline.waves(Step(FAILED, FAILED), {"ERROR": ""})
    if failed:
        _print_shares(f"on failure: {FAILED}", failed, root)


def _gate(pipeline: FleetPipeline) -> str:
    health = pipeline.placement.health
    if health is None:
        return "the health gate"
    probes = [f"http {health.http[0]}"] if health.http else []
    probes += [f"tcp {health.tcp[0]}:{health.tcp[1]}"] if health.tcp else []
    probes += [f"command {health.command!r}"] if health.command else []
    return (
        f"the health gate: {', '.join(probes) or 'hooks'}, {health.retries} tries {health.interval:g} s apart"
    )


def _print_shares(title: str, waves: list[list[Share]], root: str) -> None:
    """A hook per line with the targets it runs on, wave after wave."""
    print(f"  {title}")
    for wave in waves:
        placed: dict[tuple[str, str], list[str]] = {}
        for share in wave:
            name = "this machine" if share.target.kind == "local" else share.target.name
            for hook in share.hooks:
                placed.setdefault((hook.label, hook.path), []).append(name)
        for (label, path), names in placed.items():
            print(f"      {label}  {relative(path, root)}  on {', '.join(names)}")
