"""`juncture run STAGE TASK`: one task with its deps and task hooks (whoosh's `<stage> <task>`)."""

from __future__ import annotations

import argparse
import os

from ..engine import run_plan
from ..errors import UsageError
from ..model.run import identity
from ..pipeline.local import Pipeline, stage_of
from ..render.pipeline import PipelineOutput
from ..render.terminal import TerminalReporter
from ..state.session import open_session
from .common import project_from


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    stage = stage_of(project, args.stage)
    config = project.config.deploy
    if args.task not in config.tasks:
        raise UsageError(f"no task {args.task!r} (tasks: {', '.join(config.tasks) or 'none'})")
    pipeline = Pipeline(project, stage, "run", identity(), PipelineOutput())
    plan = pipeline.task_plan(args.task, args.task, "")
    os.chdir(project.root)
    session = open_session(
        project, pipeline.run_id, "run", stage=stage.name, event=args.task, who=pipeline.who.performer
    )
    code = 130
    try:
        result = run_plan(plan, TerminalReporter("verbose" if args.verbose else "normal"), session)
        code = result.exit_code
    finally:
        session.end(code)
    if result.exit_code:
        import sys

        sys.stderr.write(f"juncture: {result.message()}\n")
    return result.exit_code
