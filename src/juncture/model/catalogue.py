"""Built-in events: the names Kamal, maand and whoosh users already have hooks for.

A hook directory for one of these is never an orphan. The deploy pipeline fires them at the points
the README's table gives; `juncture fire NAME` fires any of them by hand.
"""

from __future__ import annotations

from .event import EventSpec

__all__ = ["BUILT_IN"]


def _spec(name: str, description: str, failure: str = "abort") -> EventSpec:
    return EventSpec(name=name, failure=failure, description=description, source="built-in")


_EVENTS = [
    # Kamal (.kamal/hooks/<name>): every hook aborts the command when it fails.
    _spec("docker-setup", "Kamal: after Docker is installed on a host"),
    _spec("pre-connect", "Kamal: before taking the deploy lock and connecting to hosts"),
    _spec("pre-build", "Kamal: before the build"),
    _spec("pre-deploy", "Kamal: final checks before deploying"),
    _spec("pre-app-boot", "Kamal: before the new release starts"),
    _spec("post-app-boot", "Kamal: after the new release started"),
    _spec("post-deploy", "Kamal: after a deploy, redeploy or rollback"),
    _spec("pre-proxy-reboot", "Kamal: before the proxy restarts"),
    _spec("post-proxy-reboot", "Kamal: after the proxy restarted"),
    # maand (manifest executed_on events).
    _spec("post_build", "maand: after the catalog is built"),
    _spec("pre_deploy", "maand: before files are synced; secrets and variables for templates"),
    _spec("post_deploy", "maand: after a successful rollout"),
    _spec("job_control", "maand: custom lifecycle of a job"),
    _spec("health_check", "maand: probes after allocations start"),
    _spec("cli", "maand: operator-triggered hooks"),
    _spec("after_allocation_started", "maand: after a batch of allocations started"),
    _spec("after_allocation_stopped", "maand: after an allocation stopped", failure="continue"),
    # whoosh deploy phases.
    *(
        _spec(f"deploy:{phase}", f"deploy phase {phase}")
        for phase in (
            "starting",
            "check",
            "init",
            "started",
            "updating",
            "symlink",
            "updated",
            "publishing",
            "published",
            "finishing",
            "finished",
            "rollback",
        )
    ),
    _spec("deploy:failed", "after any phase, hook or task of a deploy failed", failure="continue"),
]

BUILT_IN: dict[str, EventSpec] = {spec.name: spec for spec in _EVENTS}
