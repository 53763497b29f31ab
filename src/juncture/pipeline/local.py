"""The deploy and rollback pipelines: phases in order, each firing its events through the engine.

`deploy_steps` and `rollback_steps` are pure data (what `--dry-run` prints); `Pipeline` executes them
against a target. Any failure (a built-in action, a hook, a task, Ctrl-C or SIGTERM) once the lock is
taken runs the `deploy:failed` hooks with the error (before it, nothing was attempted); any failure removes
a release that never went live and releases the lock, so `current` always points at a complete release.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._util.record import record
from ..config.deploy import Stage
from ..engine import run_plan
from ..errors import UsageError
from ..model.outcome import RunResult
from ..model.recorded import check
from ..model.run import Identity, contract, git_commit, new_run_id
from ..plan.plan import Plan, event_hooks, template_context
from ..plan.steps import (
    ACTIONS,
    AFTER,
    BEFORE,
    FAILED,
    ROLLBACK,
    ROLLBACK_AFTER,
    ROLLBACK_BEFORE,
    RUNTIME_EVENTS,
    STEPS,
)
from ..project import Project
from ..release import lock
from ..release.local import LocalTarget, StepFailed, release_key
from ..release.templates import SUFFIX, Values, render_tree
from ..render.pipeline import PipelineOutput
from ..sources.rundirs import Hook
from ..sources.tasks import expand
from ..state.session import Session, open_session

if TYPE_CHECKING:
    from ..release.remote import RemoteTarget

__all__ = ["Failure", "Pipeline", "Step", "deploy_steps", "rollback_release", "rollback_steps", "stage_of"]


@record
class Step:
    phase: str
    event: str = ""  # fire this event's hooks (part: before | after | all) ...
    part: str = "all"
    action: str = ""  # ... or run this built-in action


@record(frozen=False)
class Failure:
    phase: str
    message: str
    hook: str = ""
    exit_code: str = ""
    interrupted: bool = False


class _HookFailed(Exception):
    def __init__(self, result: RunResult) -> None:
        self.result = result


def deploy_steps(phases: tuple[str, ...]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for phase in phases:
        steps += [Step(phase, event) for event in BEFORE.get(phase, ())]
        if phase in ACTIONS:
            steps += [Step(phase, phase, "before"), Step(phase, action=phase), Step(phase, phase, "after")]
        else:
            steps.append(Step(phase, phase))
        if phase == "deploy:finished":
            steps.append(Step(phase, action="unlock"))
        steps += [Step(phase, event) for event in AFTER.get(phase, ())]
    return tuple(steps)


def rollback_steps() -> tuple[Step, ...]:
    first, *around = ROLLBACK_BEFORE  # pre-connect comes before the lock
    return (
        Step(ROLLBACK, first),
        Step(ROLLBACK, action="deploy:starting"),
        *(Step(ROLLBACK, event) for event in around),
        Step(ROLLBACK, ROLLBACK, "before"),
        Step(ROLLBACK, action=ROLLBACK),
        Step(ROLLBACK, ROLLBACK, "after"),
        *(Step(ROLLBACK, event) for event in ROLLBACK_AFTER),
        Step(ROLLBACK, action="unlock"),
        Step(ROLLBACK, "post-deploy"),
    )


def stage_of(project: Project, name: str) -> Stage:
    stages = project.config.deploy.stages
    if name not in stages:
        known = ", ".join(stages) or f"none: add stages: to {project.config.file}"
        raise UsageError(f"no stage {name!r} (stages: {known})")
    return stages[name]


def rollback_release(target: LocalTarget | RemoteTarget, to: str | None) -> str:
    """The release a rollback goes to: `--to`, else the newest published release older than current.

    Published: revisions.log records it (deployed, or rolled back to). Any other release directory was
    left by a deploy that failed (or was killed) before it went live: it may be incomplete, so it is
    never a rollback's target."""
    current = target.current()
    releases = target.releases()
    if to is not None:
        if to not in releases:
            raise UsageError(
                f"no release {to!r} in {target.releases_dir} (releases: {', '.join(releases) or 'none'})"
            )
        if to == current:
            raise UsageError(f"release {to} is already current")
        if to not in _published(target):
            raise UsageError(
                f"release {to} was never published ({target.revisions_log} records no deploy of it; "
                "a failed deploy left it): not a rollback target"
            )
        return to
    if current is None:
        raise UsageError(f"nothing to roll back: {target.current_link} does not exist")
    published = _published(target)
    now = release_key(current)
    older = [r for r in releases if release_key(r) < now]
    live = [r for r in older if r in published]
    if not live:
        unpublished = f"; never published: {', '.join(older)}" if older else ""
        raise UsageError(
            f"no release before {current} to roll back to (releases: {', '.join(releases)}{unpublished})"
        )
    return live[-1]


def _published(target: LocalTarget | RemoteTarget) -> set[str]:
    return {r.release for r in target.revisions()}


class Pipeline:
    """One deploy or rollback of a stage: the facts hooks see, and the steps' execution."""

    def __init__(
        self,
        project: Project,
        stage: Stage,
        verb: str,
        who: Identity,
        output: PipelineOutput,
        *,
        version: str | None = None,
        release: str | None = None,
        rollback_to: str | None = None,
        skip_hooks: bool = False,
        dry_run: bool = False,
        lock_wait: float = 0.0,
    ) -> None:
        for what, value in (("version", version), ("release", release), ("--to", rollback_to)):
            if value:
                check(what, value)  # they are written to revisions.log and the history
        self.project = project
        self.stage = stage
        self.verb = verb
        self.who = who
        self.output = output
        self.skip_hooks = skip_hooks
        self.rollback_to = rollback_to  # --to: the release stays the one asked for
        self.dry_run = dry_run
        self.lock_wait = lock_wait
        self.run_id = new_run_id(who.started)
        self.session: Session | None = None  # opened when the run starts
        self.started = time.monotonic()
        self.target = target = LocalTarget(stage.deploy_to)
        self.previous = target.current() or ""
        # a deploy makes a new release; `run` works in the current one
        self.release = release or (target.new_release_name() if verb == "deploy" else "")
        if verb == "run":
            self.release = self.previous
        self.version = version or self._version()
        self.built = False  # the release directory exists (it is removed if the deploy fails)
        self.published = False
        self.recorded = False  # revisions.log has this deploy's line
        self.locked = False  # this run may hold the lock (releasing checks the run id)
        self.attempted = False  # the lock was taken: from here on, a failure runs deploy:failed
        self.points = 0
        self.cleanup = False  # rollback --cleanup
        self.phase = ""

    def _version(self) -> str:
        source = self.project.config.deploy.source
        if source.git is not None:
            import subprocess

            done = subprocess.run(
                [
                    "git",
                    "-C",
                    self.project.root,
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    f"{source.git}^{{commit}}",
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise UsageError(
                    f"source git ref {source.git!r} does not name a commit in {self.project.root}"
                )
            return done.stdout.strip()
        return git_commit(self.project.root) or self.release

    def runtime(self) -> float:
        return time.monotonic() - self.started

    # -- what the first and last lines say (a stage on hosts says it per host) ---------------------

    def where(self) -> str:
        """Where the stage deploys."""
        return self.target.deploy_to

    def landed(self) -> str:
        """Where the release is live after a successful run."""
        path = self.target.release_path(self.release)
        if self.verb == "deploy":
            return f"{path} ({self.target.current_link} -> releases/{self.release})"
        return path

    def now(self) -> str:
        """What `current` points at, for the line of a failed run."""
        current = self.target.current()
        return f"current -> releases/{current}" if current else "no current release"

    # -- facts and plans --------------------------------------------------------------------------

    def facts(self, phase: str, event: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        target = self.target
        release_path = target.release_path(self.release) if self.release else ""
        values = {
            "APP": self.project.config.app,
            "VERSION": self.version,
            "STAGE": self.stage.name,
            "HOSTS": target.host,
            "HOST": target.host,
            "PHASE": phase,
            "DEPLOY_TO": target.deploy_to,
            "RELEASE": self.release,
            "RELEASE_PATH": release_path,
            "CURRENT_PATH": target.current_link,
            "PREVIOUS_RELEASE": self.previous,
        }
        if event in RUNTIME_EVENTS:
            values["RUNTIME"] = str(round(self.runtime()))
        return {**values, **(extra or {})}

    def plan(self, step: Step, extra: dict[str, str] | None = None) -> Plan | None:
        """The engine plan of a `fire` step, or None when nothing is attached there."""
        if self.skip_hooks:
            return None
        values = self.facts(step.phase, step.event, extra)
        templates = template_context(values, self.stage.variables)
        hooks = event_hooks(
            self.project, step.event, templates, part=step.part, default_dir=self.default_dir()
        )
        return self.plan_for(step.event, values, hooks) if hooks else None

    def task_plan(self, task: str, event: str, phase: str) -> Plan:
        """One task on its own (with its deps and task hooks), as `event`: `run`, a replaced step."""
        values = self.facts(phase, event)
        templates = template_context(values, self.stage.variables)
        deploy = self.project.config.deploy
        hooks = expand(deploy, self.project.root, event, [task], templates, self.default_dir())
        return self.plan_for(event, values, hooks)

    def plan_for(self, event: str, values: dict[str, str], hooks: tuple[Hook, ...]) -> Plan:
        project = self.project
        spec = project.event(event)
        env = contract(
            project.config.env_prefix,
            spec,
            verb=self.verb,
            run_id=self.run_id,
            who=self.who,
            app=project.config.app,
            version=self.version,
            dry_run=self.dry_run,
            context=values,
        )
        self.points += 1
        log_dir = os.path.join(
            project.state_dir, "logs", self.run_id, f"{self.points:02d}-{event.replace(':', '-')}"
        )
        return Plan(self.run_id, spec, self.verb, project.root, env, hooks, log_dir)

    def default_dir(self) -> str | None:
        """Where a task runs without `dir:`: the new release once it exists, else the project."""
        if self.verb == "deploy":
            return self.target.release_path(self.release) if self.built else None
        return self.target.current_link if os.path.isdir(self.target.current_link) else None

    def check_plans(self, steps: tuple[Step, ...]) -> list[tuple[Step, Plan | None]]:
        """Every step's plan, computed before anything runs: a template error stops the deploy here."""
        planned = [(step, self.plan(step) if step.event else None) for step in steps]
        self.plan(Step(FAILED, FAILED), {"ERROR": ""})
        self.points = 0
        return planned

    # -- execution --------------------------------------------------------------------------------

    def run(self, steps: tuple[Step, ...], cleanup: bool = False) -> int:
        self.check_plans(steps)
        self.cleanup = cleanup
        self.session = open_session(
            self.project,
            self.run_id,
            self.verb,
            stage=self.stage.name,
            event=self.verb,
            version=self.version,
            who=self.who.performer,
        )
        code = 130
        try:
            code = self._run(steps)
        finally:
            self.session.end(code)
        return code

    def _run(self, steps: tuple[Step, ...]) -> int:
        self.output.started(self)
        with _sigterm_interrupts():
            try:
                for step in steps:
                    self.phase = step.phase
                    if step.action:
                        self.timed(step)
                    else:
                        self.fire(step)
            except (StepFailed, lock.LockError, UsageError) as exc:
                return self.fail(Failure(self.phase, str(exc)))
            except _HookFailed as exc:
                return self.fail(self._hook_failure(exc.result))
            except KeyboardInterrupt:
                return self.fail(Failure(self.phase, f"interrupted during {self.phase}", interrupted=True))
            except Exception as exc:  # a bug: still run the failure hooks and release the lock
                return self.fail(Failure(self.phase, f"internal error: {type(exc).__name__}: {exc}"))
        self.output.finished(self)
        return 0

    def fire(self, step: Step) -> None:
        plan = self.plan(step)
        if plan is not None:
            self.output.point(step)
            self.execute(plan)

    def template_values(self) -> tuple[dict[str, str], Values]:
        """What release templates see: the deploy's facts, the stage's variables, the KV store."""
        context = template_context(self.facts("deploy:updating", "deploy:updating"), self.stage.variables)
        assert self.session is not None
        namespaces = (f"stage:{self.stage.name}", "app")
        return context, Values(self.session.store, namespaces)

    def timed(self, step: Step) -> None:
        """A built-in step, in the run's history too."""
        began = time.monotonic()
        status = "failed"
        try:
            self.act(step.action)
            status = "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if self.session is not None:
                name = STEPS.get(step.action, step.action)
                self.session.step_done(step.phase, name, time.monotonic() - began, status)

    def execute(self, plan: Plan) -> None:
        result = run_plan(plan, self.output.hooks, self.session)
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if result.status == "failed":
            raise _HookFailed(result)

    def act(self, action: str) -> None:
        target, config = self.target, self.project.config.deploy
        began = time.monotonic()
        if action == "deploy:starting":
            self._lock()
            detail = f"lock taken ({lock.LOCK_NAME} in {target.deploy_to})"
        elif action == "deploy:check":
            target.ensure_tree(config.shared_dirs, config.shared_files)
            detail = f"{target.deploy_to} ready"
        elif action == "deploy:updating":
            self.built = True
            rendered: list[str] = []

            def render(path: str, templates: list[str]) -> None:
                if templates:  # the store and the facts only for a release that has templates
                    rendered.extend(render_tree(path, templates, *self.template_values()))

            files = target.build(self.release, config.source, self.project.root, render, SUFFIX)
            detail = f"built release {self.release}: {files} files" + (
                f", {len(rendered)} template(s) rendered" if rendered else ""
            )
        elif action == "deploy:symlink":
            target.link_shared(self.release, config.shared_dirs, config.shared_files)
            detail = f"linked {len(config.shared_dirs) + len(config.shared_files)} shared path(s)"
        elif action == "deploy:publishing":
            target.swap(self.release)
            self.published = True
            detail = f"current -> releases/{self.release}"
        elif action == "deploy:finishing":
            self.record(target)
            pruned = target.prune(self.stage.keep_releases, {self.release, self.previous})
            detail = f"revisions.log updated, {len(pruned)} old release(s) removed"
        elif action == ROLLBACK:
            detail = self._rollback()
        else:  # unlock
            lock.release(target.deploy_to, self.run_id)
            self.locked = False
            detail = "lock released"
        self.output.action(self.phase, detail, time.monotonic() - began)

    def _lock(self) -> None:
        target = self.target
        try:
            os.makedirs(target.deploy_to, exist_ok=True)
        except OSError as exc:
            raise StepFailed(f"cannot create {target.deploy_to}: {exc.strerror}") from None
        info = lock.new_info(self.run_id, self.verb, self.stage.name, self.version, self.who.performer)
        self.locked = True  # before: an interrupt right after the link still releases it
        lock.acquire(target.deploy_to, info, self.lock_wait, self.output.waiting, self.took_over)
        self.attempted = True
        # Another run may have deployed while this one waited: what is current, and free names, are
        # known only now.
        current = target.current() or ""
        if current != self.previous:
            self.previous = current
            if self.verb == "rollback" and not self.rollback_to and self.release:
                self.release = rollback_release(target, None)
        if self.verb == "deploy":
            name = target.new_release_name()
            if self.version == self.release:
                self.version = name
            self.release = name

    def _rollback(self) -> str:
        """Point `current` back at the chosen release, or run the task that replaces this step."""
        target, config = self.target, self.project.config.deploy
        replaced = next((t for t in config.tasks.values() if t.replace == ROLLBACK), None)
        if replaced is not None:
            self.execute(self.task_plan(replaced.name, ROLLBACK, ROLLBACK))
            target.record(
                "rolled-back", self.release, by=self.who.performer, run=self.run_id, task=replaced.name
            )
            return f"replaced by task {replaced.name}"
        if not target.current():
            raise StepFailed(f"nothing to roll back: {target.current_link} does not exist")
        target.swap(self.release)
        self.published = True
        target.record(
            "rolled-back", self.release, **{"from": self.previous}, by=self.who.performer, run=self.run_id
        )
        detail = f"current -> releases/{self.release} (was {self.previous})"
        if self.cleanup and self.previous and self.previous != self.release:
            target.remove(self.previous)
            detail += f"; removed {self.previous}"
        return detail

    # -- failure ----------------------------------------------------------------------------------

    def _hook_failure(self, result: RunResult) -> Failure:
        hook = result.aborted_by
        assert hook is not None
        code = ""
        if hook.exit_code is not None:
            code = str(hook.exit_code)
        elif hook.signal:
            code = str(128 + hook.signal)  # as a shell reports a process killed by a signal
        return Failure(self.phase, result.message(), hook.hook.label, code)

    def fail(self, failure: Failure) -> int:
        """Run the failure hooks, then clean up (`clean_up_after_failure`), and report."""
        if self.session is not None:
            failure.message = self.session.mask_text(failure.message)
        self.output.failed(failure)
        extra = {
            "ERROR": failure.message,
            "ERROR_PHASE": failure.phase,
            "ERROR_HOOK": failure.hook,
            "ERROR_HOST": self.error_host(),
            "ERROR_EXIT_CODE": failure.exit_code,
        }
        try:
            with _sigterm_interrupts():
                # a deploy that never took the lock attempted nothing: no one is paged for it
                result = self.fire_failure_hooks(extra) if self.attempted else None
            if result is not None and result.failures:
                self.output.failure_hooks_failed(result)
        finally:
            self.clean_up_after_failure()
        self.output.summary_failed(self, failure)
        return 130 if failure.interrupted else 1

    def error_host(self) -> str:
        return self.target.host

    def record(self, target: LocalTarget | RemoteTarget, result: str = "") -> None:
        """This deploy's line in revisions.log: what makes its release a rollback target."""
        target.record(
            "deployed",
            self.release,
            version=self.version,
            by=self.who.performer,
            run=self.run_id,
            result=result,
        )
        self.recorded = True

    def clean_up_after_failure(self) -> None:
        """Remove a release that never went live; record one that did (it is complete, and `current`
        stays on it); release the lock."""
        if self.built and not self.published and self.release != self.target.current():
            self.target.remove(self.release)
            self.output.note(f"removed release {self.release}, which never went live")
        if self.verb == "deploy" and self.published and not self.recorded:
            try:
                self.record(self.target, "failed")
            except StepFailed as exc:
                self.output.note(str(exc))
        if self.locked:
            try:
                if lock.release(self.target.deploy_to, self.run_id):
                    self.output.note("lock released")
            except lock.LockError as exc:
                self.output.note(f"could not release the lock: {exc}")

    def took_over(self, holder: lock.LockInfo, verdict: lock.Verdict) -> None:
        self.output.note(f"took over a stale deploy lock ({verdict.reason}), {holder.describe()}")

    def fire_failure_hooks(self, extra: dict[str, str]) -> RunResult | None:
        plan = self.plan(Step(FAILED, FAILED), extra)
        if plan is None:
            return None
        self.output.point(Step(FAILED, FAILED))
        try:
            return run_plan(plan, self.output.hooks, self.session)
        except KeyboardInterrupt:
            return None


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a deploy the way Ctrl-C does: failure hooks, cleanup, lock released."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
