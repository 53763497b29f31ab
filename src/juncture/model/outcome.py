"""What happened when a plan ran: one result per hook and one for the run."""

from __future__ import annotations

import signal

from .._util.record import field, record
from ..plan.plan import Plan
from ..sources.rundirs import Hook

__all__ = ["FAILED", "HookResult", "RunResult", "describe", "root_failure", "what"]

FAILED = ("failed", "timeout", "error")  # the statuses of a hook that did not do its job


@record(frozen=False)
class HookResult:
    hook: Hook
    index: int
    # ok | failed (non-zero exit or killed by a signal) | timeout | error (could not start) | interrupted
    # | skipped (a task whose earlier command or task hook failed)
    status: str = "running"
    tolerated: bool = False  # failed inside a continue_on_error task: the event goes on
    exit_code: int | None = None
    signal: int | None = None
    duration: float = 0.0
    timeout: float = 0.0
    error: str = ""
    tail: bytes = b""
    output_bytes: int = 0
    log_path: str | None = None
    target: str = "local"  # the host or container it ran on

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@record(frozen=False)
class RunResult:
    plan: Plan
    status: str = "ok"  # ok | failed (aborted) | interrupted
    hooks: list[HookResult] = field(default_factory=list)
    aborted_by: HookResult | None = None
    interrupted: list[HookResult] = field(default_factory=list)
    duration: float = 0.0

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "failed": 1, "interrupted": 130}[self.status]

    @property
    def failures(self) -> list[HookResult]:
        return [r for r in self.hooks if r.status in FAILED]

    def message(self) -> str:
        """The one line that explains a non-zero exit."""
        event = self.plan.event.name
        if self.status == "interrupted":
            which = ", ".join(r.hook.path for r in self.interrupted) or "no hook was running"
            return f"event {event} interrupted: {which}"
        if self.aborted_by is not None:
            return f"event {event} aborted: {what(self.aborted_by.hook)} {describe(self.aborted_by)}"
        return ""


def root_failure(results: list[RunResult]) -> RunResult | None:
    """The failed run to report: one that a hook of its own aborted, before one stopped by another
    target's failure (a lost host interrupts the others)."""
    failed = [r for r in results if r.status == "failed"]
    own = (r for r in failed if any(h is r.aborted_by for h in r.hooks))
    return next(own, failed[0] if failed else None)


def what(hook: Hook) -> str:
    """`hook PATH` for a file, `task NAME (juncture.yaml:LINE)` for a config task."""
    return f"hook {hook.path}" if hook.command is None else f"{hook.label} ({hook.path})"


def describe(result: HookResult) -> str:
    if result.status == "timeout":
        return f"timed out after {result.timeout:g} s"
    if result.status == "error":
        if result.error.startswith("connection to"):  # a remote hook whose host went away
            return result.error
        return f"could not start: {result.error}"
    if result.status == "interrupted":
        return f"was interrupted: {result.error}" if result.error else "was interrupted"
    if result.status == "skipped":
        return "skipped (its task failed)"
    if result.signal is not None:
        try:
            name = signal.Signals(result.signal).name
        except ValueError:
            name = str(result.signal)
        return f"was killed by signal {name}"
    if result.exit_code:
        return f"exited with code {result.exit_code}"
    if result.status == "failed" and result.error:  # exited 0, but what it left is wrong
        return result.error
    return "succeeded"
