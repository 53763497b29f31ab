"""Firing an event across a stage's targets: connect once, then run each wave's plans side by side."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..config.deploy import Stage
from ..config.hosts import Host
from ..engine import Reporter, run_plans
from ..errors import JunctureError
from ..model.outcome import RunResult
from ..model.run import Identity, contract
from ..model.target import Target
from ..plan.fanout import Share
from ..plan.plan import Plan
from ..project import Project
from ..state.session import Session
from ..transports.ssh.pool import Connections

__all__ = ["Fleet", "Unreachable"]


class Unreachable(JunctureError):
    exit_code = 1


class Fleet:
    """One run's view of a stage: its connections, and the facts each target's hooks get."""

    def __init__(
        self, project: Project, stage: Stage | None, run_id: str, who: Identity, verb: str, dry_run: bool
    ) -> None:
        self.project = project
        self.stage = stage
        self.run_id = run_id
        self.who = who
        self.verb = verb
        self.dry_run = dry_run
        placement = stage.placement if stage is not None else None
        self.placement = placement
        self.connections = Connections(placement, run_id) if placement is not None else None
        self.skipped: dict[str, str] = {}  # unreachable hosts left out (on_unreachable: skip)

    def hosts_of(self, waves: list[list[Share]]) -> list[Host]:
        """The stage's hosts that the waves' targets run on (or in a container on)."""
        names = {s.target.host.name for wave in waves for s in wave if s.target.host is not None}
        return [h for h in self.placement.hosts if h.name in names] if self.placement is not None else []

    def reach(self, hosts: list[Host]) -> None:
        """Connect to `hosts`. `abort`: an unreachable host fails the run before anything ran;
        `skip`: it is left out and reported."""
        if self.connections is None or self.placement is None:
            return
        hosts = [h for h in hosts if h.name not in self.skipped]
        failed = self.connections.connect(hosts)
        if failed and self.placement.on_unreachable == "abort":
            first = next(iter(failed.values()))
            more = f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else ""
            raise Unreachable(f"unreachable: {first}{more}")
        self.skipped.update(failed)

    def reachable(self, target: Target) -> bool:
        return target.host is None or target.host.name not in self.skipped

    def env(self, spec_event: str, target: Target, values: dict[str, str]) -> dict[str, str]:
        project = self.project
        facts = dict(values)
        if target.kind != "local":
            host = target.host
            facts["HOST"] = host.name if host is not None else "localhost"
            facts["ROLES"] = ",".join(target.roles)
            if target.container is not None:
                facts["CONTAINER"] = target.container.name
                facts["CONTAINER_KIND"] = target.container.kind
        if self.placement is not None and self.placement.hosts:
            facts.setdefault("HOSTS", ",".join(h.name for h in self.placement.hosts))
        return contract(
            project.config.env_prefix,
            project.event(spec_event),
            verb=self.verb,
            run_id=self.run_id,
            who=self.who,
            app=project.config.app,
            version=facts.get("VERSION", ""),
            dry_run=self.dry_run,
            context=facts,
        )

    def plans(
        self,
        event: str,
        wave: list[Share],
        values: Callable[[Target], dict[str, str]],
        log_dir: str,
        cwd: str,
    ) -> list[Plan]:
        spec = self.project.event(event)
        plans = []
        for share in wave:
            if not self.reachable(share.target):
                continue
            target = share.target
            where = log_dir if target.kind == "local" else os.path.join(log_dir, target.name)
            plans.append(
                Plan(
                    self.run_id,
                    spec,
                    self.verb,
                    cwd if target.kind == "local" else "",
                    self.env(event, target, values(target)),
                    share.hooks,
                    where,
                    target,
                )
            )
        return plans

    def run(self, plans: list[Plan], reporter: Reporter, session: Session | None = None) -> list[RunResult]:
        concurrency = self.placement.concurrency if self.placement is not None else 1
        return run_plans(plans, reporter, self.connections, concurrency, session)

    def close(self) -> None:
        if self.connections is not None:
            self.connections.close()
