"""A plan: which hooks an event runs, in which order, with which environment. Pure data."""

from __future__ import annotations

import os

from .._util.record import record
from ..model.event import EventSpec
from ..model.run import Identity, contract, git_commit, new_run_id, resolve_context
from ..model.target import LOCAL, Target
from ..project import Project
from ..sources.rundirs import Hook, discover
from ..sources.tasks import expand

__all__ = ["Plan", "event_hooks", "make_plan", "template_context"]

# Contract values that templates see, under their lower-case names.
_TEMPLATE_KEYS = (
    "APP",
    "VERSION",
    "STAGE",
    "PHASE",
    "DEPLOY_TO",
    "RELEASE",
    "RELEASE_PATH",
    "CURRENT_PATH",
    "ERROR",
)


@record
class Plan:
    run_id: str
    event: EventSpec
    verb: str
    cwd: str
    env: dict[str, str]  # the contract; the local target adds it to the caller's environment
    hooks: tuple[Hook, ...]
    log_dir: str
    target: Target = LOCAL  # where the hooks run


def template_context(values: dict[str, str], variables: dict[str, str]) -> dict[str, str]:
    """What `{{ ... }}` in a task can name: the stage's variables and the facts of this point.
    `error` is empty except in deploy:failed hooks, so one template can serve every phase."""
    return {**variables, "error": "", **{key.lower(): values[key] for key in _TEMPLATE_KEYS if key in values}}


def event_hooks(
    project: Project,
    event: str,
    templates: dict[str, str],
    *,
    part: str = "all",
    default_dir: str | None = None,
) -> tuple[Hook, ...]:
    """The hooks of `event` in run order: `hooks.before` tasks, directory hooks, `hooks.after` tasks,
    `on:` tasks. `part` is before (only the first), after (the rest) or all."""
    deploy = project.config.deploy
    hooks: list[Hook] = []
    if part != "after":
        hooks += expand(deploy, project.root, event, deploy.before.get(event, ()), templates, default_dir)
    if part != "before":
        hooks += discover(project.config.layers, event)[0]
        after = (*deploy.after.get(event, ()), *deploy.on(event))
        hooks += expand(deploy, project.root, event, after, templates, default_dir)
    return tuple(hooks)


def make_plan(
    project: Project,
    event: str,
    *,
    context: dict[str, str] | None = None,
    verb: str = "fire",
    dry_run: bool = False,
    who: Identity,
    typed: EventSpec | None = None,
) -> Plan:
    spec = project.event(event, typed)
    resolved = resolve_context(spec, context or {})
    run_id = new_run_id(who.started)
    config = project.config
    version = resolved.get("VERSION") or git_commit(project.root)
    values = {"APP": config.app, "VERSION": version, "PHASE": "", **resolved}
    env = contract(
        config.env_prefix,
        spec,
        verb=verb,
        run_id=run_id,
        who=who,
        app=config.app,
        version=version,
        dry_run=dry_run,
        context=resolved,
    )
    return Plan(
        run_id=run_id,
        event=spec,
        verb=verb,
        cwd=project.root,
        env=env,
        hooks=event_hooks(project, spec.name, template_context(values, {})),
        log_dir=os.path.join(project.state_dir, "logs", run_id),
    )
