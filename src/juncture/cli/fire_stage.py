"""`juncture fire EVENT --stage STAGE`: the event's hooks on the stage's hosts and containers."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .._util.record import replace
from ..config.values import MAX_COUNT
from ..errors import HOSTS_SKIPPED, JunctureError, UsageError
from ..model.outcome import RunResult, root_failure
from ..model.run import git_commit, identity, new_run_id, resolve_context
from ..model.target import Target
from ..pipeline.fleet import Fleet
from ..pipeline.local import stage_of
from ..plan.fanout import Share, event_waves, host_context
from ..plan.plan import template_context
from ..project import Project
from ..render.terminal import format_duration
from ..state.session import open_session
from .common import no_hooks_hint, parse_assignments, unexecutable_note
from .fire import make_reporter


def fire_on_stage(project: Project, args: argparse.Namespace) -> int:
    stage = stage_of(project, args.stage)
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= MAX_COUNT:
            raise UsageError(f"--concurrency: expected a whole number from 1 to {MAX_COUNT}")
        placement = replace(stage.placement, concurrency=args.concurrency)
        stage = replace(stage, placement=placement)
    spec = project.event(args.event)
    who = identity()
    run_id = new_run_id(who.started)
    resolved = resolve_context(spec, parse_assignments(args.set))
    version = resolved.get("VERSION") or git_commit(project.root)
    values = {"APP": project.config.app, "VERSION": version, "STAGE": stage.name, **resolved}

    def context(target: Target) -> dict[str, object]:
        return {**template_context(values, stage.variables), "host": host_context(target)}

    fleet = Fleet(project, stage, run_id, who, args.verb, args.dry_run)

    def spread() -> list[list[Share]]:
        return event_waves(
            project, stage, spec.name, context=context, default_dir=lambda _: None, present=fleet.reachable
        )

    waves = spread()
    log_dir = os.path.join(project.state_dir, "logs", run_id)
    if args.dry_run:
        for i, wave in enumerate(waves, 1):
            print(f"wave {i}:")
            for share in wave:
                for hook in share.hooks:
                    print(f"  [{share.target.name}] {hook.label}  {hook.path}")
        if not waves:
            no_hooks_hint(project, spec.name)
        return 0
    os.chdir(project.root)
    started = time.monotonic()
    reporter = make_reporter(args, summary=False)
    results: list[RunResult] = []
    session = open_session(
        project, run_id, args.verb, stage=stage.name, event=spec.name, version=version, who=who.performer
    )
    code = 130
    try:
        while True:  # a host left out moves `once` hooks to another, maybe one not connected yet
            skipped = len(fleet.skipped)
            fleet.reach(fleet.hosts_of(waves))
            if len(fleet.skipped) == skipped:
                break
            waves = spread()
        for wave in waves:
            plans = fleet.plans(spec.name, wave, lambda _: values, log_dir, project.root)
            wave_results = fleet.run(plans, reporter, session)
            results += wave_results
            if any(r.status != "ok" for r in wave_results):
                break
        failed = [r for r in results if r.status != "ok"]
        worst = next((r for r in failed if r.status == "interrupted"), None) or root_failure(failed)
        code = worst.exit_code if worst is not None else 0
    except JunctureError as exc:
        code = exc.exit_code
        raise
    finally:
        fleet.close()
        session.end(code)
    if code == 0 and fleet.skipped:
        code = HOSTS_SKIPPED  # done where it could be; the history says ok, the exit status says skipped
    hooks = sum(len(r.hooks) for r in results)
    targets = {r.plan.target.name for r in results}
    note = unexecutable_note(project, [spec.name])
    if not args.json and not args.quiet:
        bad = sum(len(r.failures) for r in results)
        line = f"event {spec.name}: {hooks} hook run(s) on {len(targets)} target(s), {bad} failed"
        if fleet.skipped:
            line += f"; unreachable, skipped: {', '.join(sorted(fleet.skipped))}"
        print(f"{line} in {format_duration(time.monotonic() - started)}" + (f"; {note}" if note else ""))
    elif note and args.json:
        sys.stderr.write(f"juncture: {note}\n")
    if not waves:
        no_hooks_hint(project, spec.name)
    for why in fleet.skipped.values():
        sys.stderr.write(f"juncture: skipped {why}\n")
    if worst is not None and not args.json:
        sys.stderr.write(f"juncture: [{worst.plan.target.name}] {worst.message()}\n")
    return code
