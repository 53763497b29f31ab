"""The Python API: fire an event (typed or by name) from your own code."""

from __future__ import annotations

from .engine import Reporter, run_plan
from .errors import HookFailed, Interrupted
from .model.outcome import RunResult
from .model.run import identity
from .model.typed import Event
from .plan.plan import make_plan
from .project import Project, load_project

__all__ = ["fire"]


def fire(
    event: Event | str,
    *,
    verb: str = "fire",
    project: Project | str | None = None,
    context: dict[str, str] | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Run the hooks of `event`. Raises HookFailed when an `abort` event's hook fails, Interrupted on SIGINT.

    `project` is a Project or a directory to search upward from for juncture.yaml (default: the current one).
    Output goes to the terminal reporter unless another `reporter` is given.
    """
    if not isinstance(project, Project):
        project = load_project(project)
    values = dict(context or {})
    if isinstance(event, Event):
        name, typed = event.event_name, event.spec()
        values = {**event.context(), **values}
    else:
        name, typed = event, None
    plan = make_plan(project, name, context=values, verb=verb, who=identity(), typed=typed)
    if reporter is None:
        from .render.terminal import TerminalReporter

        reporter = TerminalReporter()
    result = run_plan(plan, reporter)
    if result.status == "interrupted":
        raise Interrupted(result.message())
    if result.status == "failed":
        error = HookFailed(result.message())
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result
