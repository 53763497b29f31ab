"""`juncture fire EVENT`: run the hooks of one event."""

from __future__ import annotations

import argparse
import os

from ..engine import Reporter, run_plan
from ..model.recorded import check
from ..model.run import identity
from ..plan.plan import Plan, make_plan
from ..state.session import open_session
from .common import no_hooks_hint, parse_assignments, project_from, relative, unexecutable_note


def run(args: argparse.Namespace) -> int:
    check("--verb", args.verb)  # the run history records it
    project = project_from(args)
    if args.stage is not None:
        from .fire_stage import fire_on_stage

        return fire_on_stage(project, args)
    who = identity()
    plan = make_plan(
        project,
        args.event,
        context=parse_assignments(args.set),
        verb=args.verb,
        dry_run=args.dry_run,
        who=who,
    )
    if args.dry_run:
        _print_plan(plan, project.root, args.json)
        if not plan.hooks:
            no_hooks_hint(project, args.event)
        return 0
    note = unexecutable_note(project, [plan.event.name])
    reporter = make_reporter(args, note=note)
    version = plan.env.get(f"{project.config.env_prefix}VERSION")
    session = open_session(
        project, plan.run_id, args.verb, event=args.event, version=version, who=who.performer
    )
    os.chdir(project.root)  # hooks run here; being here already lets the engine use posix_spawn
    code = 130
    try:
        result = run_plan(plan, reporter, session)
        code = result.exit_code
    finally:
        session.end(code)
    import sys

    if not plan.hooks:
        no_hooks_hint(project, args.event)
    if note and args.json:  # the terminal reporter ends its summary line with it
        sys.stderr.write(f"juncture: {note}\n")
    if result.exit_code and not args.json:
        sys.stderr.write(f"juncture: {result.message()}\n")
    return result.exit_code


def make_reporter(args: argparse.Namespace, summary: bool = True, note: str = "") -> Reporter:
    """`note` ends the terminal's summary line (hooks skipped as not executable)."""
    if args.json:
        from ..render.jsonlines import JsonReporter

        return JsonReporter()
    from ..render.terminal import TerminalReporter

    mode = "verbose" if args.verbose else "quiet" if args.quiet else "normal"
    return TerminalReporter(mode, summary=summary, note=note)


def _print_plan(plan: Plan, root: str, as_json: bool) -> None:
    event = plan.event
    if as_json:
        from ..render.jsonlines import emit

        emit(
            {
                "type": "plan",
                "run_id": plan.run_id,
                "event": event.name,
                "revision": event.revision,
                "failure": event.failure,
                "timeout": event.timeout,
                "parallel": event.parallel,
                "cwd": plan.cwd,
                "env": plan.env,
                "hooks": [{"hook": h.label, "path": h.path, "layer": h.layer + 1} for h in plan.hooks],
            }
        )
        return
    lines = [
        f"event {event.name} (revision {event.revision}, {event.failure}, timeout {event.timeout:g} s, "
        f"parallel {event.parallel}; from {event.source})",
        f"would run {len(plan.hooks)} hook(s) in {plan.cwd}, each with the caller's environment plus:",
    ]
    lines += [f"  {key}={value}" for key, value in plan.env.items()]
    lines += [f"  {i}. {h.label}  {relative(h.path, root)}" for i, h in enumerate(plan.hooks, 1)]
    print("\n".join(lines))
