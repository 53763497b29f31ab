"""The deploy pipeline's phases and where the other tools' hook names fire in it. Pure data.

Each phase has a before point and an after point around its built-in action; a marker phase has no
action, so its two points are one. At a point, events fire in this nesting order:

    before point:  BEFORE[phase] events ..., the phase's `hooks.before` tasks
    (the action)
    after point:   the phase's own event (directory hooks, `hooks.after` tasks, `on:` tasks), AFTER[phase] ...
"""

from __future__ import annotations

__all__ = [
    "ACTIONS",
    "AFTER",
    "BEFORE",
    "DEPLOY_PHASES",
    "FAILED",
    "MARKERS",
    "ROLLBACK",
    "ROLLBACK_AFTER",
    "ROLLBACK_BEFORE",
    "RUNTIME_EVENTS",
]

DEPLOY_PHASES = (
    "deploy:starting",
    "deploy:check",
    "deploy:init",
    "deploy:started",
    "deploy:updating",
    "deploy:symlink",
    "deploy:updated",
    "deploy:publishing",
    "deploy:published",
    "deploy:finishing",
    "deploy:finished",
)
# The built-in action of each phase that has one.
ACTIONS = {
    "deploy:starting": "take the deploy lock",
    "deploy:check": "ensure the directory tree and shared paths",
    "deploy:updating": "build the release directory",
    "deploy:symlink": "link shared paths into the release",
    "deploy:publishing": "swap `current` to the release",
    "deploy:finishing": "append to revisions.log, prune old releases",
}
# deploy:finished is a marker too: the lock is released right after its event, before AFTER's events.
MARKERS = tuple(phase for phase in DEPLOY_PHASES if phase not in ACTIONS)
FAILED = "deploy:failed"
ROLLBACK = "deploy:rollback"
# Every built-in step, as the dry run and the history name it.
STEPS = {
    **ACTIONS,
    ROLLBACK: "swap `current` back",
    "unlock": "release the deploy lock",
    "rollout": "swap `current` in batches, each behind its health gate",
}

# Kamal's and maand's names, mapped onto the points of the pipeline (see the README's table).
BEFORE = {
    "deploy:starting": ("pre-connect",),  # Kamal: before the lock and any connection
    "deploy:updating": ("pre-build", "pre_deploy"),  # before the release is built (maand: vars for templates)
    "deploy:publishing": ("pre-deploy", "pre-app-boot"),  # Kamal: final checks, then before the new boot
}
AFTER = {
    "deploy:updating": ("post_build",),  # maand: the release is built; validate artifacts
    "deploy:publishing": ("post-app-boot", "after_allocation_started", "health_check"),
    "deploy:published": ("post_deploy",),  # maand: after the rollout and its health gate
    "deploy:finished": ("post-deploy",),  # Kamal: last, with RUNTIME, once the lock is released
}
# A rollback is a swap of `current` wrapped like a publish (Kamal runs pre-deploy and post-deploy).
ROLLBACK_BEFORE = ("pre-connect", "pre-deploy", "pre-app-boot")
ROLLBACK_AFTER = ("post-app-boot",)
# Events that get <PREFIX>RUNTIME, the whole seconds the verb has taken so far.
RUNTIME_EVENTS = ("deploy:finished", "post-deploy", FAILED, ROLLBACK)
