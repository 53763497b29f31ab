"""A plan: which hooks an event runs, in which order, with which environment. Pure data."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .discovery import Hook, discover
from .environment import Identity, contract, git_commit, new_run_id, resolve_context
from .events import EventSpec
from .project import Project

__all__ = ["Plan", "make_plan"]


@dataclass(frozen=True)
class Plan:
    run_id: str
    event: EventSpec
    verb: str
    cwd: str
    env: dict[str, str]  # the contract; the local target adds it to the caller's environment
    hooks: tuple[Hook, ...]
    log_dir: str


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
    hooks, _ = discover(config.layers, spec.name)
    return Plan(
        run_id=run_id,
        event=spec,
        verb=verb,
        cwd=project.root,
        env=env,
        hooks=hooks,
        log_dir=os.path.join(project.state_dir, "logs", run_id),
    )
