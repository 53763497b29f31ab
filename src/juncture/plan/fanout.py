"""An event's hooks spread over a stage's targets, in waves. Pure: reads hook files, runs nothing.

The hooks of an event run in three waves — `hooks.before` tasks, directory hooks, `hooks.after` and
`on:` tasks — and every target of a wave runs its share side by side; the next wave starts when the
whole wave is done. So the configured order holds on each target and across them (a before-task has
run everywhere before any directory hook starts). A wave that runs on this machine alone is merged
with its neighbours, which keeps a stage without hosts at one plan per event, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._util.record import record, replace
from ..config.deploy import Stage
from ..config.hosts import Selector
from ..errors import UsageError
from ..model.target import LOCAL, Target, header_selector, matches, resolve_audience, select, visible
from ..project import Project
from ..sources.rundirs import Hook, discover
from ..sources.tasks import expand

__all__ = ["Share", "event_waves", "host_context"]


@record
class Share:
    """The hooks one target runs in one wave."""

    target: Target
    hooks: tuple[Hook, ...]


def host_context(target: Target) -> dict[str, object]:
    """What templates see as `host`."""
    host = target.host
    if target.kind == "ssh" and host is not None:
        return {"name": host.name, "address": host.address, "roles": list(host.roles), "port": host.port}
    return {"name": target.name, "address": "127.0.0.1", "roles": [], "port": None}


def event_waves(
    project: Project,
    stage: Stage | None,
    event: str,
    *,
    part: str = "all",
    context: Callable[[Target], dict[str, object]],
    default_dir: Callable[[Target], str | None],
    allowed: Callable[[Target], bool] = lambda _: True,
    present: Callable[[Target], bool] = lambda _: True,
) -> list[list[Share]]:
    """`context(target)`: the template names for a target; `allowed(target)`: whether it runs now (in
    the current batch); `present(target)`: whether it takes part in the run at all (not an unreachable
    host left out), which is where `once` looks. Without a stage, everything runs on this machine."""
    deploy = project.config.deploy
    placement = stage.placement if stage is not None else None
    waves: list[list[Share]] = []

    def tasks(names: Iterable[str]) -> list[Share]:
        per_target: dict[Target, list[Hook]] = {}
        for name in names:
            targets = (
                select(deploy.tasks[name].selector, placement, present) if placement is not None else [LOCAL]
            )
            for target in targets:
                if allowed(target):
                    root = default_dir(target) if target.kind != "local" else project.root
                    per_target.setdefault(target, []).extend(
                        expand(deploy, root or "/", event, [name], context(target), default_dir(target))
                    )
        return [Share(t, tuple(h)) for t, h in per_target.items() if h]

    if part != "after":
        waves.append(tasks(deploy.before.get(event, ())))
    if part != "before":
        waves.append(_directory_hooks(project, stage, event, allowed, present))
        waves.append(tasks((*deploy.after.get(event, ()), *deploy.on(event))))
    return _merged([wave for wave in waves if wave])


def _directory_hooks(
    project: Project,
    stage: Stage | None,
    event: str,
    allowed: Callable[[Target], bool],
    present: Callable[[Target], bool],
) -> list[Share]:
    config = project.config
    spec = project.event(event)
    if stage is None or not (stage.placement.hosts or stage.placement.containers):
        targets = [LOCAL]
        if set(spec.audience) - {"local", "hosts"}:
            names = " ".join(a for a in spec.audience if a not in ("local", "hosts"))
            where = "give --stage" if stage is None else f"stage {stage.name} has no hosts or containers"
            raise UsageError(f"event {event}'s audience names {names}: {where}")
    else:
        targets = resolve_audience(spec.audience, stage.placement, event)
    scoped = any(config.layer_scopes)
    found: dict[tuple[str, ...], tuple[Hook, ...]] = {}
    shares = []
    primary = stage.placement.primary if stage is not None else None
    headers: dict[str, Selector | None] = {}  # each hook file is read once, not once per target
    for target in targets:
        if not allowed(target):
            continue
        layers = visible(config.layers, config.layer_scopes, target) if scoped else config.layers
        if layers not in found:
            found[layers] = discover(layers, event)[0]
        hooks = []
        for hook in found[layers]:
            if hook.path not in headers:
                headers[hook.path] = header_selector(hook.path) if len(targets) > 1 or scoped else None
            selector = headers[hook.path]
            if selector is None:
                hooks.append(hook)
                continue
            wide = replace(selector, once=False)
            fits = [t for t in targets if (not wide or matches(wide, t)) and present(t)]
            if selector.once:  # the primary host when it fits, else the first that does: in one batch
                fits = (
                    [next((t for t in fits if t.host is not None and t.host == primary), fits[0])]
                    if fits
                    else []
                )
            if target in fits:
                hooks.append(hook)
        if hooks:
            shares.append(Share(target, tuple(hooks)))
    return shares


def _merged(waves: list[list[Share]]) -> list[list[Share]]:
    """Consecutive waves that each run on one and the same target become one wave."""
    merged: list[list[Share]] = []
    for wave in waves:
        last = merged[-1] if merged else None
        if last is not None and len(last) == 1 and len(wave) == 1 and last[0].target == wave[0].target:
            merged[-1] = [Share(wave[0].target, last[0].hooks + wave[0].hooks)]
        else:
            merged.append(wave)
    return merged
