"""The deploy pipeline on a stage's SSH hosts: every phase on all hosts side by side, except publishing,
which rolls out in batches, each behind a health gate.

For each batch (`rollout.max_concurrent` hosts, in rollout order): the pre-app-boot hooks, the swap of
`current`, the post-app-boot hooks, then the gate — the stage's http/tcp/command probes and the
`health_check` hooks, retried — before the next batch starts. A failed batch stops the rollout; with
`auto_rollback` the hosts already switched go back to their previous release, else the report says
which host runs which release. The deploy lock lives on the primary host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import lock
from .config.deploy import Text
from .config.hosts import Host
from .fanout import event_waves, host_context
from .fleet import Fleet, Unreachable
from .phases import FAILED, ROLLBACK
from .pipeline import Failure, Pipeline, Step, _HookFailed, _sigterm_interrupts
from .plan import template_context
from .remote_target import RemoteTarget, release_tar
from .target import StepFailed, next_release_name
from .targets import Target
from .templating import render

if TYPE_CHECKING:
    from .runners.ssh import SshPool

__all__ = ["FleetPipeline"]

_BATCHED = ("pre-app-boot", "deploy:publishing", "post-app-boot", "after_allocation_started")


class FleetPipeline(Pipeline):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet = Fleet(self.project, self.stage, self.run_id, self.who, self.verb, self.dry_run)
        self.placement = self.stage.placement
        self.previous = ""
        self.remote: dict[str, RemoteTarget] = {}
        self.previous_of: dict[str, str] = {}
        self.switched: list[str] = []
        self.batch: tuple[str, ...] | None = None
        self.batch_facts: dict[str, str] = {}
        self.failed_host = ""
        self._deploy_to: dict[str, str] = {}

    # -- where ------------------------------------------------------------------------------------

    def deploy_to(self, host: Host) -> str:
        """The stage's `deploy_to` rendered for `host` (once: it is asked for every hook and step)."""
        if host.name not in self._deploy_to:
            self._deploy_to[host.name] = self._render_deploy_to(host)
        return self._deploy_to[host.name]

    def _render_deploy_to(self, host: Host) -> str:
        text = Text(
            self.stage.deploy_to, self.project.config.file, None, ("stages", self.stage.name, "deploy_to")
        )
        context = {"host": host_context(Target("ssh", host.name, host)), "stage": self.stage.name}
        return render(text, {**context, "app": self.project.config.app})

    def allowed(self, target: Target) -> bool:
        if target.host is None:
            return True
        return self.fleet.reachable(target) and (self.batch is None or target.host.name in self.batch)

    def values(self, step: Step, target: Target, extra: dict[str, str] | None) -> dict[str, str]:
        values = {**self.facts(step.phase, step.event, extra), **self.batch_facts}
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

    def waves(self, step: Step, extra: dict[str, str] | None = None) -> list[list[Any]]:
        if self.skip_hooks:
            return []

        def context(target: Target) -> dict[str, object]:
            values = self.values(step, target, extra)
            return {**template_context(values, self.stage.variables), "host": host_context(target)}

        return event_waves(
            self.project,
            self.stage,
            step.event,
            part=step.part,
            context=context,
            default_dir=self.default_dir_for,
            allowed=self.allowed,
        )

    def check_plans(self, steps: tuple[Step, ...]) -> list[tuple[Step, Any]]:
        for step in steps:
            if step.event:
                self.waves(step)
        self.waves(Step(FAILED, FAILED), {"ERROR": ""})
        return [(step, None) for step in steps]

    def fire(self, step: Step, extra: dict[str, str] | None = None) -> None:
        waves = self.waves(step, extra)
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
            results = self.fleet.run(plans, self.output.hooks)
            if any(r.status == "interrupted" for r in results):
                raise KeyboardInterrupt
            failed = next((r for r in results if r.status == "failed"), None)
            if failed is not None:
                self.failed_host = failed.plan.target.name
                raise _HookFailed(failed)

    # -- steps ------------------------------------------------------------------------------------

    def run(self, steps: tuple[Step, ...], cleanup: bool = False) -> int:
        batched = tuple(
            s for s in steps if s.phase == "deploy:publishing" and (s.event or s.action) in _BATCHED
        )
        self.batched_steps = batched
        rewritten: list[Step] = []
        for step in steps:
            if step in batched:
                if step is batched[0]:
                    rewritten.append(Step("deploy:publishing", action="rollout"))
                continue
            rewritten.append(step)
        try:
            return super().run(tuple(rewritten), cleanup)
        finally:
            self.fleet.close()

    def each(self, work: Callable[[RemoteTarget], object], hosts: list[str] | None = None) -> None:
        """Run `work` on every (reachable) host side by side; the first failure is raised."""
        targets = [self.remote[h] for h in (hosts if hosts is not None else list(self.remote))]
        with ThreadPoolExecutor(max_workers=max(1, min(len(targets), self.placement.concurrency))) as pool:
            futures = [(t, pool.submit(work, t)) for t in targets]
        for target, future in futures:
            exc = future.exception()
            if exc is not None:
                self.failed_host = target.host
                raise exc

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
            self.each(lambda t: t.build(self.release, data))
            detail = f"built release {self.release} on {len(self.remote)} host(s): {files} files"
        elif action == "deploy:symlink":
            self.each(lambda t: t.link_shared(self.release, config.shared_dirs, config.shared_files))
            detail = f"linked {len(config.shared_dirs) + len(config.shared_files)} shared path(s)"
        elif action == "rollout":
            detail = self._rollout()
        elif action == "deploy:finishing":

            def finish(t: RemoteTarget) -> None:
                t.record(
                    "deployed", self.release, version=self.version, by=self.who.performer, run=self.run_id
                )
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
        self.primary().lock(info, self.lock_wait)
        self.locked = True
        names: dict[str, list[str]] = {}

        def read(t: RemoteTarget) -> None:
            self.previous_of[t.host] = t.current() or ""
            names[t.host] = t._names()

        self.each(read)
        self.previous = self.previous_of.get(primary.name, "")
        if self.verb == "deploy":
            name = next_release_name([n for found in names.values() for n in found])
            if self.version == self.release:
                self.version = name
            self.release = name
        elif self.verb == "rollback" and not self.rollback_to:
            from .pipeline import rollback_release

            self.release = rollback_release(self.primary(), None)  # type: ignore[arg-type]
        skipped = (
            f"; unreachable, skipped: {', '.join(sorted(self.fleet.skipped))}" if self.fleet.skipped else ""
        )
        return f"connected to {len(self.remote)} host(s); lock taken on {primary.name}{skipped}"

    def _rollout(self) -> str:
        order = [h.name for h in self.placement.rollout_order() if h.name in self.remote]
        size = self.placement.rollout.max_concurrent or len(order)
        batches = [tuple(order[i : i + size]) for i in range(0, len(order), size)]
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
                    self.each(lambda t: t.swap(self.release), list(batch))
                    self.switched += batch
                    self.published = True
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

    def _rollback_hosts(self) -> str:
        release = self.release
        hosts = [h for h in self.remote if self.remote[h].releases().count(release)]
        missing = sorted(set(self.remote) - set(hosts))
        if missing:
            raise StepFailed(f"release {release} is not on {', '.join(missing)}")
        self.each(lambda t: t.swap(release))
        self.published = True
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
            self.each(
                lambda t: (
                    t.remove(self.previous_of.get(t.host, ""))
                    if self.previous_of.get(t.host) not in ("", release)
                    else None
                )
            )
        return f"current -> releases/{release} on {len(self.remote)} host(s)"

    # -- failure ----------------------------------------------------------------------------------

    def _hook_failure(self, result: Any) -> Failure:
        failure = super()._hook_failure(result)
        failure.message = f"[{result.plan.target.name}] {failure.message}"
        return failure

    def fail(self, failure: Failure) -> int:
        self.output.failed(failure)
        extra = {
            "ERROR": failure.message,
            "ERROR_PHASE": failure.phase,
            "ERROR_HOOK": failure.hook,
            "ERROR_HOST": self.failed_host,
            "ERROR_EXIT_CODE": failure.exit_code,
        }
        try:
            with _sigterm_interrupts():
                try:
                    self.fire(Step(FAILED, FAILED), extra)
                except _HookFailed as exc:
                    self.output.failure_hooks_failed(exc.result)
                except KeyboardInterrupt:
                    pass
        finally:
            self._restore()
            if self.locked:
                try:
                    self.primary().unlock(self.run_id)
                    self.output.note("lock released")
                except StepFailed as exc:
                    self.output.note(f"could not release the lock: {exc}")
        self.output.summary_failed(self, failure)
        self.fleet.close()
        return 130 if failure.interrupted else 1

    def _restore(self) -> None:
        """Auto-rollback the switched hosts, else say who runs what; drop the release where it never went live."""
        if self.verb != "deploy" or not self.built:
            return
        switched = [h for h in self.switched if h in self.remote]
        if switched and self.placement.rollout.auto_rollback:
            back = [h for h in switched if self.previous_of.get(h)]
            for name in back:
                try:
                    self.remote[name].swap(self.previous_of[name])
                except StepFailed as exc:
                    self.output.note(f"auto-rollback failed: {exc}")
            self.output.note(f"auto-rollback: {', '.join(back)} back on their previous release")
            switched = [h for h in switched if h not in back]
        for name, target in self.remote.items():
            if name not in switched:
                target.remove(self.release)
        if switched:
            rest = [h for h in self.remote if h not in switched]
            self.output.note(
                f"hosts on release {self.release}: {', '.join(switched)}; "
                f"still on their previous release: {', '.join(rest) or 'none'}"
            )
