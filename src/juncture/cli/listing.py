"""`juncture list [EVENT]`: what would run, in order, from which file, and why."""

from __future__ import annotations

import argparse

from ..config.deploy import DeployConfig
from ..model.event import EventSpec, event_path
from ..sources.rundirs import Discovery, Hook, discover, discover_all
from .common import project_from, relative

ORDER_RULE = (
    "order: in each event, the flat file <event> (main hook) runs first, then the drop-ins in <event>.d/ "
    "by byte order of name; a same-named file in a later layer replaces the earlier one; a symlink to "
    "/dev/null masks it"
)


def run(args: argparse.Namespace) -> int:
    project = project_from(args)
    config = project.config
    if args.event:
        spec = project.event(args.event)
        hooks, skipped = discover(config.layers, spec.name)
        found = Discovery({spec.name: hooks}, tuple(skipped), {})
        events = [spec]
    else:
        found = discover_all(config.layers)
        deploy = config.deploy
        attached = {*deploy.before, *deploy.after, *(e for t in deploy.tasks.values() for e in t.on)}
        names = sorted(set(found.hooks) | set(config.events) | (attached - set(deploy.tasks)))
        events = [project.event(name) for name in names]
    root = project.root
    out = [
        "layers: " + ", ".join(f"{i}. {relative(p, root)}" for i, p in enumerate(config.layers, 1)),
        ORDER_RULE,
    ]
    for spec in events:
        out.append("")
        out.append(_header(spec, project.known(spec.name)))
        hooks = found.hooks.get(spec.name, ())
        tasks = _tasks(project.config.deploy, spec.name)
        if not hooks and not tasks:
            out.append("  (no hooks)")
        lines = [f"  task {name}  {where}  — {how}" for name, where, how in tasks]
        before = sum(how.startswith("hooks.before") for _, _, how in tasks)
        out += lines[:before]
        for i, hook in enumerate(hooks, 1):
            out.append(
                f"  {i}. {hook.name}  {relative(hook.path, root)}  — {_why(hook, len(config.layers), root)}"
            )
        out += lines[before:]
        if args.verbose:
            for skip in found.skipped:
                if skip.event == spec.name:
                    out.append(f"  skipped: {relative(skip.path, root)}  — {skip.reason}")
    if args.verbose and not args.event:
        loose = [s for s in found.skipped if s.event is None]
        if loose:
            out.append("")
            out += [f"skipped: {relative(s.path, root)}  — {s.reason}" for s in loose]
    print("\n".join(out))
    return 0


def _tasks(deploy: DeployConfig, event: str) -> list[tuple[str, str, str]]:
    """The tasks attached to `event`, in run order (their deps and task hooks run with them)."""
    found = [(name, f"hooks.before.{event}") for name in deploy.before.get(event, ())]
    found += [(name, f"hooks.after.{event}") for name in deploy.after.get(event, ())]
    found += [(name, "on:") for name in deploy.on(event)]
    return [(name, deploy.tasks[name].source, how) for name, how in found]


def _why(hook: Hook, layers: int, root: str) -> str:
    kind = "main hook (flat file)" if hook.flat else f"drop-in of {event_path(hook.event)}.d/"
    text = f"{kind}, layer {hook.layer + 1} of {layers}"
    if hook.replaces:
        text += ", replaces " + ", ".join(relative(path, root) for path in hook.replaces)
    return text


def _header(spec: EventSpec, known: bool) -> str:
    origin = spec.source if known else "not declared: orphan, runs only when fired by name"
    return (
        f"{spec.name}  ({spec.failure}, timeout {spec.timeout:g} s, parallel {spec.parallel}, "
        f"revision {spec.revision}; {origin})"
    )
