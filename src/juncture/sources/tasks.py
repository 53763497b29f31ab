"""Turn config tasks into the commands an event runs: task hooks, deps, body, in whoosh's order.

A task runs as: its `hooks.before` tasks, its `deps`, its own commands, then its `hooks.after` tasks,
all inside the task's scope, so a failure skips the rest of the task (after-hooks run only when the
task succeeded). Values are rendered here, before anything runs, so a template error stops a deploy
before it takes the lock.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterable, Mapping

from ..config.deploy import DeployConfig, Script, Task
from ..errors import ConfigError
from ..model.hook import Command
from ..plan.templating import render
from ..transports.shell import interpreter_of
from .rundirs import Hook

__all__ = ["expand"]

_BY_EXTENSION = {".py": ("python3",), ".sh": ("sh",), ".bash": ("bash",)}
_JS_RUNTIMES = {".js": ("node", "bun"), ".mjs": ("node", "bun"), ".ts": ("bun", "node")}
_invocations = itertools.count(1)  # scope ids, unique across every plan of a run


class _Expansion:
    def __init__(
        self,
        config: DeployConfig,
        root: str,
        event: str,
        context: Mapping[str, object],
        default_dir: str | None,
    ) -> None:
        self.config = config
        self.root = root
        self.event = event
        self.context = context
        self.default_dir = default_dir
        self.hooks: list[Hook] = []
        self.pulled_in: set[str] = set()  # deps already run in this expansion

    def task(self, task: Task, outer: tuple[tuple[int, bool], ...]) -> None:
        scope = (*outer, (next(_invocations), task.continue_on_error))
        config = self.config
        for name in config.before.get(task.name, ()):
            self.task(config.tasks[name], scope)
        for name in task.deps:
            if name not in self.pulled_in:
                self.pulled_in.add(name)
                self.task(config.tasks[name], scope)
        self.body(task, scope)
        for name in config.after.get(task.name, ()):
            self.task(config.tasks[name], scope)

    def body(self, task: Task, scope: tuple[tuple[int, bool], ...]) -> None:
        context = self.context
        cwd = render(task.dir, context) if task.dir is not None else self.default_dir
        if cwd is not None:
            cwd = os.path.join(self.root, cwd)  # a relative `dir:` is relative to the project
        env = tuple((key, render(value, context)) for key, value in task.env)
        runs: list[Command] = [
            Command(("/bin/sh", "-c", render(text, context)), cwd, env, task.timeout, scope)
            for text in task.commands
        ]
        runs += [_script_command(script, cwd, env, task.timeout, scope) for script in task.scripts]
        for i, command in enumerate(runs):
            name = task.name if len(runs) == 1 else f"{task.name}#{i + 1}"
            self.hooks.append(Hook(self.event, name, task.source, 0, False, command=command))


def expand(
    config: DeployConfig,
    root: str,
    event: str,
    names: Iterable[str],
    context: Mapping[str, object],
    default_dir: str | None = None,
) -> tuple[Hook, ...]:
    """The commands of tasks `names` attached to `event`, each wrapped in its task hooks."""
    expansion = _Expansion(config, root, event, context, default_dir)
    for name in names:
        expansion.task(config.tasks[name], ())
    return tuple(expansion.hooks)


def _script_command(
    script: Script,
    cwd: str | None,
    env: tuple[tuple[str, str], ...],
    timeout: float | None,
    scope: tuple[tuple[int, bool], ...],
) -> Command:
    if script.path is not None:
        with open(script.path, "rb") as handle:
            first = handle.readline(512)
        interpreter = script.interpreter or _interpreter(script, first, os.path.splitext(script.path)[1])
        return Command((*interpreter, script.path), cwd, env, timeout, scope, file=script.path)
    text = script.text or ""
    first_line = text.encode().split(b"\n", 1)[0]
    interpreter = script.interpreter or _interpreter(script, first_line, "", default=("sh",))
    return Command(interpreter, cwd, env, timeout, scope, script=text, suffix=_suffix(interpreter))


def _interpreter(
    script: Script, first_line: bytes, extension: str, default: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """As the kernel reads a `#!` line (the program and one optional argument), else by extension."""
    shebang = interpreter_of(first_line)
    if shebang is not None:
        return shebang
    if extension in _BY_EXTENSION:
        return _BY_EXTENSION[extension]
    if extension in _JS_RUNTIMES:
        for runtime in _JS_RUNTIMES[extension]:
            if shutil.which(runtime):
                return (runtime,)
        wanted = " or ".join(_JS_RUNTIMES[extension])
        raise _error(script, f"{extension} script needs {wanted} on PATH (or set interpreter)")
    if default is not None:
        return default
    raise _error(script, "no #! line and no known extension (.py .sh .bash .js .ts): set interpreter")


def _suffix(interpreter: tuple[str, ...]) -> str:
    program = os.path.basename(interpreter[-1] if interpreter[0].endswith("env") else interpreter[0])
    return ".ts" if program == "bun" else ".py" if program.startswith("python") else ""


def _error(script: Script, message: str) -> ConfigError:
    where = script.where
    return ConfigError(where.file, where.line, where.path, message)
