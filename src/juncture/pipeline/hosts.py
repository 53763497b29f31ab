"""The deploy pipeline on a stage's SSH hosts: every phase on all hosts side by side, except publishing,
which rolls out in batches, each behind a health gate.

For each batch (`rollout.max_concurrent` hosts, in rollout order): the pre-app-boot hooks, the swap of
`current`, the post-app-boot hooks, then the gate — the stage's http/tcp/command probes and the
`health_check` hooks, retried — before the next batch starts. A failed batch stops the rollout; with
`auto_rollback` the hosts already switched go back to their previous release, else the report says
which host runs which release. The deploy lock lives on the primary host.

`host_targets` connects to a stage's hosts for the commands that only read or free their release
trees (`releases`, `lock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..config.deploy import Stage, Text
from ..config.hosts import Host
from ..errors import HOSTS_SKIPPED
from ..model.outcome import RunResult, root_failure
from ..model.run import new_run_id
from ..model.target import Target, select
from ..plan.fanout import Share, event_waves, host_context
from ..plan.plan import template_context
from ..plan.steps import FAILED, ROLLBACK
from ..plan.templating import render
from ..project import Project
from ..release import lock
from ..release.local import StepFailed, next_release_name
from ..release.remote import RemoteTarget, release_tar
from ..release.templates import render_tar
from ..sources.tasks import expand
from ..transports.ssh.pool import Connections
from .fleet import Fleet, Unreachable
from .local import Failure, Pipeline, Step, _HookFailed, _published, rollback_release

if TYPE_CHECKING:
    from ..transports.ssh.worker import SshPool

__all__ = ["FleetPipeline", "host_targets", "render_deploy_to"]

_BATCHED = ("pre-app-boot", "deploy:publishing", "post-app-boot", "after_allocation_started")
_GATE = "health_check"  # fired by each batch's health gate, not as a step of its own
_SHOWN = 8  # host names a summary line lists before it abbreviates


def render_deploy_to(project: Project, stage: Stage, host: Host) -> str:
    """The stage's `deploy_to` template rendered for `host`."""
    text = Text(stage.deploy_to, project.config.file, None, ("stages", stage.name, "deploy_to"))
    context = {"host": host_context(Target("ssh", host.name, host)), "stage": stage.name}
    return render(text, {**context, "app": project.config.app})


@contextmanager
def host_targets(
    project: Project, stage: Stage, hosts: list[Host]
) -> Iterator[tuple[dict[str, RemoteTarget], dict[str, str]]]:
    """Connections to `hosts`: the reachable ones' release trees by name, and why each other host
    could not be reached. Closed on leaving."""
    connections = Connections(stage.placement, new_run_id(time.time()))
    try:
        failed = connections.connect(hosts)
        pool = connections.ssh()
        yield (
            {
                h.name: RemoteTarget(pool, h.name, render_deploy_to(project, stage, h))
                for h in hosts
                if h.name not in failed
            },
            failed,
        )
    finally:
        connections.close()


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class FleetPipeline(Pipeline):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet = Fleet(self.project, self.stage, self.run_id, self.who, self.verb, self.dry_run)
        self.placement = self.stage.placement
        self.previous = ""
        self.remote: dict[str, RemoteTarget] = {}
        self.previous_of: dict[str, str] = {}
        self.current_of: dict[str, str] = {}  # where `current` points on each host, as this run left it
        self.switched: set[str] = set()  # hosts swapped to the new release by the rollout
        self.batch: tuple[str, ...] | None = None
        self.batch_facts: dict[str, str] = {}
        self.failed_host = ""
        self._deploy_to: dict[str, str] = {}
        self._hosts = ",".join(h.name for h in self.placement.hosts)
        self.failing = False
        if self.verb == "deploy":
            # The release is named once connected, above every host's releases: the name the base
            # class made from the (unrendered) local deploy_to would be a guess.
            if self.version == self.release:
                self.version = ""
            self.release = ""

    # -- where ------------------------------------------------------------------------------------

    def deploy_to(self, host: Host) -> str:
        """The stage's `deploy_to` rendered for `host` (once: it is asked for every hook and step)."""
        if host.name not in self._deploy_to:
            self._deploy_to[host.name] = self._render_deploy_to(host)
        return self._deploy_to[host.name]

    def _render_deploy_to(self, host: Host) -> str:
        return render_deploy_to(self.project, self.stage, host)

    def allowed(self, target: Target) -> bool:
        if target.host is None:
            return True
        # the failure hooks skip the hosts never connected to (the run failed before, or could not reach them)
        return self.fleet.reachable(target) and (not self.failing or target.host.name in self.remote)

    def values(self, step: Step, target: Target, extra: dict[str, str] | None) -> dict[str, str]:
        # HOSTS: every host of the stage, on this machine too (Kamal's hooks read KAMAL_HOSTS locally)
        values = {**self.facts(step.phase, step.event, extra), **self.batch_facts, "HOSTS": self._hosts}
        host = target.host
        if host is not None:
            deploy_to = self.deploy_to(host)
            values.update(
                DEPLOY_TO=deploy_to,
                RELEASE_PATH=f"{deploy_to}/releases/{self.release}" if self.release else "",
                CURRENT_PATH=f"{deploy_to}/current",
                PREVIOUS_RELEASE=self.previous_of.get(host.name, ""),
            )
        return values

    def default_dir_for(self, target: Target) -> str | None:
        if target.host is None:
            return self.project.root
        deploy_to = self.deploy_to(target.host)
        return f"{deploy_to}/releases/{self.release}" if self.built else deploy_to

    # -- hooks ------------------------------------------------------------------------------------

    def waves(self, step: Step, extra: dict[str, str] | None = None) -> list[list[Share]]:
        if self.skip_hooks:
            return []

        def context(target: Target) -> dict[str, object]:
            values = self.values(step, target, extra)
            return {**template_context(values, self.stage.variables), "host": host_context(target)}

        waves = event_waves(
            self.project,
            self.stage,
            step.event,
            part=step.part,
            context=context,
            default_dir=self.default_dir_for,
            allowed=self.allowed,
            present=self.fleet.reachable,
        )
        if self.batch is None:
            return waves
        # Targets are picked over the whole stage, then this batch's are kept: a `once` hook runs in
        # the batch of the host it picked (the primary), not once in every batch.
        batch = self.batch
        kept = [[s for s in wave if s.target.host is None or s.target.host.name in batch] for wave in waves]
        return [wave for wave in kept if wave]

    def check_plans(self, steps: tuple[Step, ...]) -> list[tuple[Step, Any]]:
        for step in steps:
            if step.event:
                self.waves(step)
        self.waves(Step(FAILED, FAILED), {"ERROR": ""})
        return [(step, None) for step in steps]

    def fire(self, step: Step, extra: dict[str, str] | None = None) -> None:
        self.run_waves(step, self.waves(step, extra), extra)

    def run_waves(self, step: Step, waves: list[list[Share]], extra: dict[str, str] | None = None) -> None:
        if not waves:
            return
        self.output.point(step)
        self.points += 1
        log_dir = (
            f"{self.project.state_dir}/logs/{self.run_id}/{self.points:02d}-{step.event.replace(':', '-')}"
        )
        for wave in waves:
            plans = self.fleet.plans(
                step.event, wave, lambda t: self.values(step, t, extra), log_dir, self.project.root
            )
            results = self.fleet.run(plans, self.output.hooks, self.session)
            if any(r.status == "interrupted" for r in results):
                raise KeyboardInterrupt
            failed = root_failure(results)
            if failed is not None:
                self.failed_host = failed.plan.target.name
                raise _HookFailed(failed)

    # -- steps ------------------------------------------------------------------------------------

    @staticmethod
    def in_rollout(step: Step) -> bool:
        """Whether a deploy step runs once per batch (health_check: in each batch's health gate)."""
        return step.phase == "deploy:publishing" and (step.event or step.action) in (*_BATCHED, _GATE)

    def rollout_order(self) -> list[str]:
        """The stage's rollout order, or the `rollout_order` a hook of this run stored (maand's
        put_rollout_order), which must name every host of the stage exactly once."""
        configured = [h.name for h in self.placement.rollout_order()]
        written = self.session.values.get(f"stage:{self.stage.name}", {}) if self.session else {}
        if "rollout_order" not in written:
            return configured
        order = [name for name in written["rollout_order"].replace(",", " ").split() if name]
        unknown = sorted(set(order) - set(configured))
        missing = sorted(set(configured) - set(order))
        twice = sorted({name for name in order if order.count(name) > 1})
        if unknown or missing or twice:
            problems = [
                f"{label}: {', '.join(names)}"
                for label, names in (("unknown", unknown), ("missing", missing), ("twice", twice))
                if names
            ]
            raise StepFailed(
                f"rollout_order {written['rollout_order']!r} is not an order of the stage's hosts ("
                + "; ".join(problems)
                + ")"
            )
        return order

    def batches(self, hosts: list[str] | None = None) -> list[tuple[str, ...]]:
        """The rollout's batches of `hosts` (default: all the stage's), in rollout order."""
        order = [name for name in self.rollout_order() if hosts is None or name in hosts]
        size = self.placement.rollout.max_concurrent or len(order) or 1
        return [tuple(order[i : i + size]) for i in range(0, len(order), size)]

    def run(self, steps: tuple[Step, ...], cleanup: bool = False) -> int:
        batched = tuple(s for s in steps if self.in_rollout(s))
        self.batched_steps = tuple(s for s in batched if s.event != _GATE)
        rewritten: list[Step] = []
        for step in steps:
            if step in batched:
                if step is batched[0]:
                    rewritten.append(Step("deploy:publishing", action="rollout"))
                continue
            rewritten.append(step)
        try:
            code = super().run(tuple(rewritten), cleanup)
        finally:
            self.fleet.close()
        return HOSTS_SKIPPED if code == 0 and self.fleet.skipped else code

    def each(self, work: Callable[[RemoteTarget], object], hosts: list[str] | None = None) -> None:
        """Run `work` on every (reachable) host side by side; the first failure is raised."""
        failed = self.attempt(work, hosts)
        if failed:
            self.failed_host, exc = next(iter(failed.items()))
            raise exc

    def attempt(
        self, work: Callable[[RemoteTarget], object], hosts: list[str] | None = None
    ) -> dict[str, BaseException]:
        """Run `work` on every (reachable) host side by side; {host: error} of those it failed on."""
        targets = [self.remote[h] for h in (hosts if hosts is not None else list(self.remote))]
        if not targets:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(len(targets), self.placement.concurrency))) as pool:
            futures = [(t, pool.submit(work, t)) for t in targets]
        return {t.host: exc for t, future in futures if (exc := future.exception()) is not None}

    def _swap(self, target: RemoteTarget, release: str) -> None:
        target.swap(release)
        self.current_of[target.host] = release

    def act(self, action: str) -> None:
        config = self.project.config.deploy
        began = time.monotonic()
        if action == "deploy:starting":
            detail = self._connect_and_lock()
        elif action == "deploy:check":
            self.each(lambda t: t.ensure_tree(config.shared_dirs, config.shared_files))
            detail = f"{len(self.remote)} host(s) ready"
        elif action == "deploy:updating":
            self.built = True
            data, files = release_tar(config.source, self.project.root, "/nonexistent")
            data, rendered = render_tar(data, *self.template_values())
            self.each(lambda t: t.build(self.release, data))
            detail = f"built release {self.release} on {len(self.remote)} host(s): {files} files" + (
                f", {rendered} template(s) rendered" if rendered else ""
            )
        elif action == "deploy:symlink":
            self.each(lambda t: t.link_shared(self.release, config.shared_dirs, config.shared_files))
            detail = f"linked {len(config.shared_dirs) + len(config.shared_files)} shared path(s)"
        elif action == "rollout":
            detail = self._rollout()
        elif action == "deploy:finishing":

            def finish(t: RemoteTarget) -> None:
                self.record(t)
                t.prune(self.stage.keep_releases, {self.release, self.previous_of.get(t.host, "")})

            self.each(finish)
            detail = "revisions.log updated, old releases pruned"
        elif action == ROLLBACK:
            detail = self._rollback_hosts()
        else:  # unlock
            self.primary().unlock(self.run_id)
            self.locked = False
            detail = "lock released"
        self.output.action(self.phase, detail, time.monotonic() - began)

    def pool(self) -> SshPool:
        assert self.fleet.connections is not None
        return self.fleet.connections.ssh()

    def primary(self) -> RemoteTarget:
        primary = self.placement.primary
        assert primary is not None
        return self.remote[primary.name]

    def _connect_and_lock(self) -> str:
        hosts = list(self.placement.hosts)
        try:
            self.fleet.reach(hosts)
        except Unreachable as exc:
            assert self.fleet.connections is not None
            self.failed_host = next(iter(self.fleet.connections.unreachable), "")
            raise StepFailed(str(exc)) from None
        primary = self.placement.primary
        assert primary is not None
        if primary.name in self.fleet.skipped:
            raise StepFailed(f"the primary host {primary.name} is unreachable: the deploy lock lives there")
        pool = self.pool()
        self.remote = {
            h.name: RemoteTarget(pool, h.name, self.deploy_to(h))
            for h in hosts
            if h.name not in self.fleet.skipped
        }
        info = lock.new_info(self.run_id, self.verb, self.stage.name, self.version, self.who.performer)
        self.locked = True  # before: an interrupt while the lock is being taken still releases it
        self.primary().lock(info, self.lock_wait, self.output.waiting, self.took_over)
        self.attempted = True
        names: dict[str, list[str]] = {}

        def read(t: RemoteTarget) -> None:
            self.previous_of[t.host] = self.current_of[t.host] = t.current() or ""
            names[t.host] = t._names()

        self.each(read)
        self.previous = self.previous_of.get(primary.name, "")
        if self.verb == "deploy":
            name = next_release_name([n for found in names.values() for n in found])
            if self.version == self.release:
                self.version = name
            self.release = name
        elif self.verb == "rollback":
            # chosen (or `--to` checked) on the primary; _rollback_hosts checks the others have it
            self.release = rollback_release(self.primary(), self.rollback_to)
            deployed = [
                r.fields.get("version", "")
                for r in self.primary().revisions()
                if r.release == self.release and r.action == "deployed"
            ]
            if deployed and deployed[-1]:
                self.version = deployed[-1]
        skipped = f"; unreachable, skipped: {self._skipped()}" if self.fleet.skipped else ""
        return f"connected to {len(self.remote)} host(s); lock taken on {primary.name}{skipped}"

    def _rollout(self) -> str:
        order = [name for name in self.rollout_order() if name in self.remote]
        batches = self.batches(order)

        def swap(t: RemoteTarget) -> None:
            self._swap(t, self.release)
            self.switched.add(t.host)  # per host: a swap that fails on one host still counts the others

        for index, batch in enumerate(batches, 1):
            self.batch = batch
            self.batch_facts = {
                "BATCH_INDEX": str(index),
                "BATCH_COUNT": str(len(batches)),
                "BATCH_HOSTS": ",".join(batch),
                "ROLLOUT_ORDER": ",".join(order),
            }
            self.output.note(f"batch {index}/{len(batches)}: {', '.join(batch)}")
            for step in self.batched_steps:
                if step.action:
                    self.published = True
                    self.each(swap, list(batch))
                else:
                    self.fire(step)
            self.health_gate(batch)
        self.batch = None
        self.batch_facts = {}
        return f"current -> releases/{self.release} on {len(order)} host(s) in {len(batches)} batch(es)"

    def health_gate(self, batch: tuple[str, ...]) -> None:
        health = self.placement.health
        has_hooks = bool(self.waves(Step("deploy:publishing", "health_check")))
        if health is None and not has_hooks:
            return
        tries = health.retries if health is not None else 1
        interval = health.interval if health is not None else 0
        problem = ""
        for attempt in range(tries):
            problem = self._probe(batch)
            if not problem and has_hooks:
                try:
                    self.fire(Step("deploy:publishing", "health_check"))
                except _HookFailed as exc:
                    problem = f"{self.failed_host}: health_check hook: {exc.result.message()}"
            if not problem:
                self.output.note(f"health gate passed: {', '.join(batch)}")
                return
            if attempt < tries - 1:
                time.sleep(interval)
        self.failed_host = problem.split(":", 1)[0]
        raise StepFailed(f"health gate failed after {tries} tries: {problem}")

    def _probe(self, batch: tuple[str, ...]) -> str:
        from .health import probe

        health = self.placement.health
        if health is None:
            return ""
        pool = self.pool()
        for name in batch:
            host = next(h for h in self.placement.hosts if h.name == name)
            context: dict[str, object] = {"host": host_context(Target("ssh", host.name, host))}

            def run(script: str, name: str = name) -> tuple[int, str]:
                return pool.run(name, script)

            problem = probe(health, context, run)
            if problem:
                return f"{name}: {problem}"
        return ""

    def _replaced_rollback(self, task: str) -> str:
        """The task that replaces the built-in swap, on the hosts its selector names."""
        step = Step(ROLLBACK, ROLLBACK)
        deploy = self.project.config.deploy
        shares = []
        for target in select(deploy.tasks[task].selector, self.placement, self.fleet.reachable):
            if target.host is not None and target.host.name not in self.remote:
                continue
            values = self.values(step, target, None)
            context = {**template_context(values, self.stage.variables), "host": host_context(target)}
            where = self.default_dir_for(target)
            hooks = expand(deploy, where or "/", ROLLBACK, [task], context, where)
            shares.append(Share(target, tuple(hooks)))
        self.run_waves(step, [shares])
        self.each(
            lambda t: t.record("rolled-back", self.release, by=self.who.performer, run=self.run_id, task=task)
        )
        return f"replaced by task {task} on {len(shares)} target(s)"

    def _rollback_hosts(self) -> str:
        replaced = next((t for t in self.project.config.deploy.tasks.values() if t.replace == ROLLBACK), None)
        if replaced is not None:
            return self._replaced_rollback(replaced.name)
        release = self.release
        hosts = [h for h in self.remote if self.remote[h].releases().count(release)]
        missing = sorted(set(self.remote) - set(hosts))
        if missing:
            raise StepFailed(f"release {release} is not on {', '.join(missing)}")
        # chosen as published on the primary; a failed deploy may have left it unpublished elsewhere
        unpublished = [h for h in hosts if release not in _published(self.remote[h])]
        if unpublished:
            raise StepFailed(
                f"release {release} was never published on {', '.join(unpublished)} (revisions.log there "
                "records no deploy of it): not a rollback target"
            )
        self.published = True
        self.each(lambda t: self._swap(t, release))
        self.each(
            lambda t: t.record(
                "rolled-back",
                release,
                **{"from": self.previous_of.get(t.host, "")},
                by=self.who.performer,
                run=self.run_id,
            )
        )
        if self.cleanup:
            left = self.attempt(
                lambda t: (
                    t.remove(self.previous_of.get(t.host, ""))
                    if self.previous_of.get(t.host) not in ("", release)
                    else None
                )
            )
            for exc in left.values():
                self.output.note(f"cleanup: {exc}")
        return f"current -> releases/{release} on {len(self.remote)} host(s)"

    # -- failure ----------------------------------------------------------------------------------

    def _hook_failure(self, result: Any) -> Failure:
        failure = super()._hook_failure(result)
        failure.message = f"[{result.plan.target.name}] {failure.message}"
        return failure

    def fail(self, failure: Failure) -> int:
        # the failure hooks reach every connected host, not only the batch that failed
        self.batch = None
        self.batch_facts = {}
        self.failing = True
        return super().fail(failure)

    def error_host(self) -> str:
        return self.failed_host

    def fire_failure_hooks(self, extra: dict[str, str]) -> RunResult | None:
        try:
            self.fire(Step(FAILED, FAILED), extra)
        except _HookFailed as exc:
            return exc.result
        except KeyboardInterrupt:
            pass
        return None

    def clean_up_after_failure(self) -> None:
        """Auto-rollback or report (`_restore`); release the lock on the primary host."""
        self._restore()
        if self.locked:
            try:
                if self.primary().unlock(self.run_id):
                    self.output.note("lock released")
            except StepFailed as exc:
                self.output.note(
                    f"could not release the lock: {exc} (`juncture lock release {self.stage.name}` frees it)"
                )

    def _restore(self) -> None:
        """Auto-rollback the switched hosts, else say who runs what; drop the release where it is not
        live (never was, or was rolled back)."""
        if self.verb != "deploy" or not self.built:
            return
        switched = [h for h in self.remote if h in self.switched]
        if switched and self.placement.rollout.auto_rollback:
            # a first deploy has no previous release to go back to
            back = [h for h in switched if self.previous_of.get(h)]
            failed = self.attempt(lambda t: self._swap(t, self.previous_of[t.host]), back)
            for exc in failed.values():
                self.output.note(f"auto-rollback failed: {exc}")
            back = [h for h in back if h not in failed]
            if back:
                self.output.note(f"auto-rollback: {_names(back)} back on their previous release")
            switched = [h for h in switched if h not in back]
        idle = [h for h in self.remote if h not in switched]
        left = self.attempt(lambda t: t.remove(self.release), idle)
        removed = [h for h in idle if h not in left]
        if removed:
            self.output.note(f"removed release {self.release} from {_names(removed)}")
        if left:
            self.output.note(f"could not remove release {self.release} from {_names(sorted(left))}")
        if switched and not self.recorded:  # live there, and complete: a rollback target later
            for exc in self.attempt(lambda t: self.record(t, "failed"), switched).values():
                self.output.note(str(exc))
        if switched:
            rest = [h for h in self.remote if h not in switched]
            self.output.note(
                f"hosts on release {self.release}: {_names(switched)}; "
                f"still on their previous release: {_names(rest) or 'none'}"
            )

    # -- what the first and last lines say -------------------------------------------------------

    def _skipped(self) -> str:
        return _names(sorted(self.fleet.skipped))

    def where(self) -> str:
        names = [h.name for h in self.placement.hosts]
        return f"{len(names)} host(s): {_names(names)}"

    def landed(self) -> str:
        skipped = f"; unreachable, skipped: {self._skipped()}" if self.fleet.skipped else ""
        hosts = f"{len(self.remote)} host(s)"
        if self.verb == "deploy":
            return f"{hosts} ({self.now()}{skipped})"
        return f"releases/{self.release} on {hosts}{skipped}"

    def now(self) -> str:
        """Where `current` points on each host, as far as this run knows (it read or set each one)."""
        if not self.current_of:
            return "no host was changed"
        by_release: dict[str, list[str]] = {}
        for name in self.remote:
            by_release.setdefault(self.current_of.get(name, ""), []).append(name)
        live = "; ".join(f"releases/{r} on {_names(n)}" for r, n in by_release.items() if r)
        none = by_release.get("")
        text = f"current -> {live}" if live else ""
        if none:
            text += ("; " if text else "") + f"no current release on {_names(none)}"
        return text
