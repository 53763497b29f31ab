"""The deploy half of `juncture.yaml`: stages, the release source, shared paths, tasks, hooks, phases.

Everything a deploy could trip over later is checked here, at load: unknown task names, dependency
cycles (through `deps` and task hooks alike), unknown phases and events. `juncture check` loads the
config, so it reports them too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from .._util.record import field, record
from ..model.event import event_name_problem
from ..plan.steps import DEPLOY_PHASES, FAILED, ROLLBACK
from .hosts import HOST_STAGE_KEYS, SELECTOR_KEYS, Placement, Selector, parse_placement, parse_selector
from .located import Located
from .values import kind, mapping, scalar, seconds, string, string_list, whole

__all__ = ["DeployConfig", "Script", "Source", "Stage", "Task", "Text", "parse_deploy"]

DEFAULT_KEEP_RELEASES = 5
DEPLOY_KEYS = ("stages", "source", "shared", "keep_releases", "variables", "tasks", "hooks", "phases")
_STAGE_KEYS = ("deploy_to", "variables", "keep_releases", *HOST_STAGE_KEYS)
_TASK_KEYS = (
    "desc",
    "run",
    "cmds",
    "scripts",
    "dir",
    "env",
    "deps",
    "timeout",
    "continue_on_error",
    "on",
    *SELECTOR_KEYS,
    "replace",
)
_REPLACEABLE = (ROLLBACK,)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names every template gets; a stage variable may not shadow them.
TEMPLATE_NAMES = (
    "deploy_to",
    "release_path",
    "current_path",
    "release",
    "stage",
    "app",
    "version",
    "phase",
    "error",
)


@record
class Text:
    """A configuration string that may be a Jinja2 template, with where it was written."""

    value: str
    file: str
    line: int | None
    path: tuple[str, ...]


@record
class Stage:
    name: str
    deploy_to: str  # absolute; with hosts, a template rendered per host (`{{ host.name }}`)
    variables: dict[str, str]
    keep_releases: int
    placement: Placement = field(default_factory=Placement)


@record
class Source:
    path: str | None = None  # absolute directory
    exclude: tuple[str, ...] = ()
    git: str | None = None  # a ref exported with `git archive`


@record
class Script:
    path: str | None  # absolute, or None for an inline `script`
    text: str | None
    interpreter: tuple[str, ...] | None  # None: the shebang, else the file extension decides
    where: Text


@record
class Task:
    name: str
    desc: str = ""
    commands: tuple[Text, ...] = ()  # `run`, or each of `cmds`; run by /bin/sh -c
    scripts: tuple[Script, ...] = ()
    dir: Text | None = None
    env: tuple[tuple[str, Text], ...] = ()
    deps: tuple[str, ...] = ()
    timeout: float | None = None
    continue_on_error: bool = False
    on: tuple[str, ...] = ()
    selector: Selector = field(
        default_factory=Selector
    )  # where it runs; empty: every host of the stage (or this machine)
    replace: str | None = None
    source: str = ""  # juncture.yaml:LINE


@record
class DeployConfig:
    stages: dict[str, Stage] = field(default_factory=dict)
    source: Source = Source()
    shared_dirs: tuple[str, ...] = ()
    shared_files: tuple[str, ...] = ()
    tasks: dict[str, Task] = field(default_factory=dict)
    before: dict[str, tuple[str, ...]] = field(default_factory=dict)  # phase, event or task -> tasks
    after: dict[str, tuple[str, ...]] = field(default_factory=dict)
    phases: tuple[str, ...] = DEPLOY_PHASES  # with the custom phases in place

    def on(self, event: str) -> tuple[str, ...]:
        """The tasks registered with `on: [event]`, in config order."""
        return tuple(name for name, task in self.tasks.items() if event in task.on)


def parse_deploy(
    doc: Located, data: dict[str, Any], root: str, is_event: Callable[[str], bool]
) -> DeployConfig:
    """`is_event(name)`: whether an event of that name is declared or built in (tasks attach to it)."""
    keep = _count(doc, data.get("keep_releases", DEFAULT_KEEP_RELEASES), ("keep_releases",))
    common = _variables(doc, data.get("variables", {}), ("variables",))
    stages = {
        name: _stage(doc, str(name), body, root, keep, common)
        for name, body in _items(doc, data.get("stages", {}), ("stages",))
    }
    phases = _phases(doc, data.get("phases", []))
    tasks = {
        str(name): _task(doc, str(name), body, root)
        for name, body in _items(doc, data.get("tasks", {}), ("tasks",))
        if _task_name(doc, name)
    }
    raw_hooks = data.get("hooks") or {}
    mapping(doc, raw_hooks, ("hooks",), ("before", "after"))

    def attachable(name: str) -> bool:
        return name in phases or name in (FAILED, ROLLBACK) or name in tasks or is_event(name)

    before, after = (
        _attachments(doc, raw_hooks.get(when), when, tasks, attachable) for when in ("before", "after")
    )
    for name, task in tasks.items():
        path = ("tasks", name)
        for i, dep in enumerate(task.deps):
            _known_task(doc, dep, tasks, (*path, "deps", str(i)))
        for i, event in enumerate(task.on):
            if not (event in phases or event in (FAILED, ROLLBACK) or is_event(event)):
                what = f"{event!r} is not a phase or a known event (declare it under events:)"
                raise doc.error((*path, "on", str(i)), _unknown(what, event, [*phases, FAILED]))
        if task.replace is not None and task.replace not in _REPLACEABLE:
            raise doc.error((*path, "replace"), f"only {', '.join(_REPLACEABLE)} can be replaced by a task")
    replacing = [name for name, task in tasks.items() if task.replace]
    if len(replacing) > 1:
        raise doc.error(
            ("tasks", replacing[1], "replace"), f"{ROLLBACK} is already replaced by {replacing[0]}"
        )
    _check_cycles(doc, tasks, before, after)
    source = _source(doc, data.get("source"), root)
    shared = data.get("shared") or {}
    mapping(doc, shared, ("shared",), ("dirs", "files"))
    shared_dirs = tuple(
        _relative(doc, p, ("shared", "dirs"))
        for p in string_list(doc, shared.get("dirs", []), ("shared", "dirs"))
    )
    shared_files = tuple(
        _relative(doc, p, ("shared", "files"))
        for p in string_list(doc, shared.get("files", []), ("shared", "files"))
    )
    return DeployConfig(stages, source, shared_dirs, shared_files, tasks, before, after, phases)


def _items(doc: Located, value: Any, path: tuple[str, ...]) -> list[tuple[Any, Any]]:
    value = value if value is not None else {}
    mapping(doc, value, path, None)
    return list(value.items())


def _count(doc: Located, value: Any, path: tuple[str, ...]) -> int:
    return whole(doc, value, path)


def _variables(doc: Located, value: Any, path: tuple[str, ...]) -> dict[str, str]:
    variables = {}
    for name, item in _items(doc, value, path):
        sub = (*path, str(name))
        if not _NAME.match(str(name)):
            raise doc.error(sub, "a variable name is letters, digits and _ (it is a template name)")
        if name in TEMPLATE_NAMES:
            raise doc.error(sub, f"{name} is set by juncture (template names: {', '.join(TEMPLATE_NAMES)})")
        variables[str(name)] = scalar(doc, item, sub)
    return variables


def _stage(doc: Located, name: str, body: Any, root: str, keep: int, common: dict[str, str]) -> Stage:
    path = ("stages", name)
    if event_name_problem(name) or ":" in name:
        raise doc.error(path, "a stage name is letters, digits and _ . @ + - (it is a command-line word)")
    body = body if body is not None else {}
    mapping(doc, body, path, _STAGE_KEYS)
    if "deploy_to" not in body:
        raise doc.error(path, "missing key deploy_to (the directory releases go to)")
    deploy_to = string(doc, body["deploy_to"], (*path, "deploy_to"))
    if not deploy_to:
        raise doc.error((*path, "deploy_to"), "expected a directory, got an empty string")
    placement = parse_placement(doc, body, path)
    if placement.hosts:
        if not deploy_to.startswith(("/", "~", "{{")):
            raise doc.error((*path, "deploy_to"), "with hosts, deploy_to is an absolute path on each host")
    else:
        deploy_to = os.path.normpath(os.path.join(root, os.path.expanduser(deploy_to)))
    return Stage(
        name=name,
        deploy_to=deploy_to,
        variables={**common, **_variables(doc, body.get("variables", {}), (*path, "variables"))},
        keep_releases=_count(doc, body.get("keep_releases", keep), (*path, "keep_releases")),
        placement=placement,
    )


def _source(doc: Located, value: Any, root: str) -> Source:
    path = ("source",)
    if value is None:
        return Source(path=root, exclude=(".git", ".juncture"))
    if isinstance(value, str):
        value = {"path": value}
    mapping(doc, value, path, ("path", "exclude", "git"))
    if ("path" in value) == ("git" in value):
        raise doc.error(path, "expected exactly one of path (a directory) or git (a ref to export)")
    exclude = string_list(doc, value.get("exclude", []), (*path, "exclude"))
    if "git" in value:
        if exclude:
            raise doc.error(
                (*path, "exclude"), "exclude applies to a path source (use .gitattributes export-ignore)"
            )
        return Source(git=string(doc, value["git"], (*path, "git")))
    directory = os.path.normpath(os.path.join(root, string(doc, value["path"], (*path, "path"))))
    return Source(path=directory, exclude=exclude)


def _relative(doc: Located, value: str, path: tuple[str, ...]) -> str:
    normal = os.path.normpath(value)
    if os.path.isabs(value) or normal == "." or normal.startswith(".."):
        raise doc.error(path, f"{value!r}: expected a path inside the release (relative, no '..')")
    return normal


def _phases(doc: Located, value: Any) -> tuple[str, ...]:
    """Insert the custom phases (`{name, before|after: PHASE}`) into the deploy sequence."""
    phases = list(DEPLOY_PHASES)
    if not isinstance(value, list):
        raise doc.error(("phases",), f"expected a list of {{name, before|after: PHASE}}, got {kind(value)}")
    for i, item in enumerate(value):
        path = ("phases", str(i))
        item = item if item is not None else {}
        mapping(doc, item, path, ("name", "before", "after"))
        if "name" not in item:
            raise doc.error(path, "missing key name")
        name = string(doc, item["name"], (*path, "name"))
        problem = event_name_problem(name)
        if problem:
            raise doc.error((*path, "name"), problem)
        if name in phases or name in (FAILED, ROLLBACK):
            raise doc.error((*path, "name"), f"phase {name} already exists")
        if ("before" in item) == ("after" in item):
            raise doc.error(path, "expected exactly one of before or after (the phase it goes next to)")
        when = "before" if "before" in item else "after"
        anchor = string(doc, item[when], (*path, when))
        if anchor not in phases:
            raise doc.error((*path, when), _unknown(f"phase {anchor!r}", anchor, phases))
        at = phases.index(anchor) + (when == "after")
        # Several custom phases after the same anchor keep their listed order.
        while when == "after" and at < len(phases) and phases[at] not in DEPLOY_PHASES:
            at += 1
        phases.insert(at, name)
    return tuple(phases)


def _task_name(doc: Located, name: Any) -> bool:
    problem = event_name_problem(str(name))
    if problem:
        raise doc.error(("tasks", str(name)), problem.replace("an event name", "a task name"))
    return True


def _task(doc: Located, name: str, body: Any, root: str) -> Task:
    path = ("tasks", name)
    if isinstance(body, str):  # `migrate: bin/rails db:migrate`
        body = {"run": body}
    body = body if body is not None else {}
    mapping(doc, body, path, _TASK_KEYS)

    def text(value: Any, sub: tuple[str, ...]) -> Text:
        return Text(string(doc, value, sub), doc.file, doc.line(sub), sub)

    bodies = [key for key in ("run", "cmds", "scripts") if key in body]
    if len(bodies) > 1:
        raise doc.error(
            (*path, bodies[1]), f"a task has one of run, cmds or scripts (it has {bodies[0]} too)"
        )
    commands: tuple[Text, ...] = ()
    if "run" in body:
        commands = (text(body["run"], (*path, "run")),)
    elif "cmds" in body:
        raw = body["cmds"]
        if not isinstance(raw, list) or not raw:
            raise doc.error((*path, "cmds"), "expected a non-empty list of commands")
        commands = tuple(text(c, (*path, "cmds", str(i))) for i, c in enumerate(raw))
    scripts = tuple(
        _script(doc, item, (*path, "scripts", str(i)), root)
        for i, item in enumerate(_list(doc, body.get("scripts", []), (*path, "scripts")))
    )
    deps = string_list(doc, body.get("deps", []), (*path, "deps"))
    if not (commands or scripts or deps):
        raise doc.error(path, "nothing to run: give run, cmds, scripts or deps")
    env = tuple(
        (
            _env_name(doc, key, (*path, "env", str(key))),
            text(scalar(doc, value, (*path, "env", str(key))), (*path, "env", str(key))),
        )
        for key, value in _items(doc, body.get("env", {}), (*path, "env"))
    )
    timeout = body.get("timeout")
    return Task(
        name=name,
        desc=string(doc, body.get("desc", ""), (*path, "desc")),
        commands=commands,
        scripts=scripts,
        dir=text(body["dir"], (*path, "dir")) if "dir" in body else None,
        env=env,
        deps=deps,
        timeout=None if timeout is None else seconds(doc, timeout, (*path, "timeout")),
        continue_on_error=_flag(doc, body, "continue_on_error", path),
        on=string_list(doc, body.get("on", []), (*path, "on")),
        selector=parse_selector(doc, body, path),
        replace=string(doc, body["replace"], (*path, "replace")) if "replace" in body else None,
        source=f"{os.path.basename(doc.file)}:{doc.line(path)}",
    )


def _list(doc: Located, value: Any, path: tuple[str, ...]) -> list[Any]:
    if not isinstance(value, list):
        raise doc.error(path, f"expected a list, got {kind(value)}")
    return value


def _flag(doc: Located, body: dict[str, Any], key: str, path: tuple[str, ...]) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise doc.error((*path, key), "expected true or false")
    return value


def _env_name(doc: Located, key: Any, path: tuple[str, ...]) -> str:
    if not _NAME.match(str(key)):
        raise doc.error(path, "an environment variable name is letters, digits and _")
    return str(key)


def _script(doc: Located, item: Any, path: tuple[str, ...], root: str) -> Script:
    if isinstance(item, str):
        item = {"path": item}
    mapping(doc, item, path, ("path", "script", "interpreter"))
    if ("path" in item) == ("script" in item):
        raise doc.error(path, "expected exactly one of path (a file) or script (inline text)")
    interpreter = None
    if "interpreter" in item:
        import shlex

        interpreter = tuple(shlex.split(string(doc, item["interpreter"], (*path, "interpreter"))))
        if not interpreter:
            raise doc.error((*path, "interpreter"), "expected a command, got an empty string")
    where = Text("", doc.file, doc.line(path), path)
    if "script" in item:
        return Script(None, string(doc, item["script"], (*path, "script")), interpreter, where)
    file = os.path.normpath(os.path.join(root, string(doc, item["path"], (*path, "path"))))
    if not os.path.isfile(file):
        raise doc.error((*path, "path"), f"script {file} does not exist")
    return Script(file, None, interpreter, where)


def _attachments(
    doc: Located, raw: Any, when: str, tasks: dict[str, Task], attachable: Callable[[str], bool]
) -> dict[str, tuple[str, ...]]:
    result = {}
    for key, value in _items(doc, raw or {}, ("hooks", when)):
        path = ("hooks", when, str(key))
        if not attachable(str(key)):
            raise doc.error(
                path, f"{key!r} is not a phase, a task or a known event (declare it under events:)"
            )
        names = string_list(doc, value, path)
        for i, name in enumerate(names):
            _known_task(doc, name, tasks, (*path, str(i)))
        result[str(key)] = names
    return result


def _known_task(doc: Located, name: str, tasks: dict[str, Task], path: tuple[str, ...]) -> None:
    if name not in tasks:
        raise doc.error(path, _unknown(f"unknown task {name!r}", name, list(tasks)))


def _unknown(what: str, name: str, choices: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, choices, n=1)
    return f"{what}" + (f" (did you mean {near[0]!r}?)" if near else "")


def _check_cycles(
    doc: Located,
    tasks: dict[str, Task],
    before: dict[str, tuple[str, ...]],
    after: dict[str, tuple[str, ...]],
) -> None:
    """A task may not reach itself through deps or task hooks: `a -> b -> a` is reported with its path."""

    def edges(name: str) -> list[tuple[str, tuple[str, ...]]]:
        found: list[tuple[str, tuple[str, ...]]] = [
            (dep, ("tasks", name, "deps", str(i))) for i, dep in enumerate(tasks[name].deps)
        ]
        for when, table in (("before", before), ("after", after)):
            found += [(t, ("hooks", when, name, str(i))) for i, t in enumerate(table.get(name, ()))]
        return found

    done: set[str] = set()
    path: list[str] = []

    def visit(name: str, key: tuple[str, ...]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise doc.error(key, f"dependency cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        path.append(name)
        for nxt, sub in edges(name):
            visit(nxt, sub)
        path.pop()
        done.add(name)

    for start in tasks:
        visit(start, ("tasks", start))
