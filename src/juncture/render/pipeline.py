"""Terminal output of a deploy or rollback: a line per phase that does something, its hooks under it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..model.outcome import RunResult, describe, what
from ..release.lock import LockInfo
from .terminal import TerminalReporter, format_duration

if TYPE_CHECKING:
    from ..pipeline.local import Failure, Pipeline, Step

__all__ = ["PipelineOutput"]


def _short(version: str) -> str:
    """A commit id to 12 characters, as git abbreviates; any other version in full."""
    is_commit = len(version) == 40 and all(c in "0123456789abcdef" for c in version)
    return version[:12] if is_commit else version


class PipelineOutput:
    """`mode`: normal, verbose (every hook line live) or quiet (failures and the last line only)."""

    def __init__(self, mode: str = "normal") -> None:
        self.mode = mode
        self.hooks = TerminalReporter(mode, indent="    ", summary=False)

    def say(self, text: str) -> None:
        self.hooks.write(text + "\n")

    def started(self, pipeline: Pipeline) -> None:
        if self.mode == "quiet":
            return
        stage, config = pipeline.stage, pipeline.project.config
        title = f"{pipeline.verb} {config.app} to stage {stage.name} ({pipeline.where()})"
        release = f", release {pipeline.release}" if pipeline.release else ""
        # on hosts, a deploy names its release (and so its default version) once connected
        version = pipeline.version or ("(the release's name)" if pipeline.verb == "deploy" else "(none)")
        self.say(f"{title}: version {version}{release}, run {pipeline.run_id}")

    def point(self, step: Step) -> None:
        if self.mode != "quiet":
            self.say(f"  {step.event}" + ("  (before)" if step.part == "before" else ""))

    def action(self, phase: str, detail: str, seconds: float) -> None:
        if self.mode != "quiet":
            self.say(f"  {phase}  {detail}  {format_duration(seconds)}")

    def note(self, text: str) -> None:
        self.say(f"  {text}")

    def waiting(self, holder: LockInfo) -> None:
        self.say(f"  waiting for the deploy lock, {holder.describe()}")

    def failed(self, failure: Failure) -> None:
        self.say(f"  {self.hooks.bad} {failure.phase} failed: {failure.message}")

    def failure_hooks_failed(self, result: RunResult) -> None:
        for hook in result.failures:
            self.say(f"  (a {result.plan.event.name} hook failed too: {what(hook.hook)} {describe(hook)})")

    def finished(self, pipeline: Pipeline) -> None:
        seconds = format_duration(pipeline.runtime())
        if pipeline.verb == "deploy":
            self.say(f"deployed {_short(pipeline.version)} to {pipeline.landed()} in {seconds}")
        elif pipeline.release:
            self.say(f"rolled back to {pipeline.landed()} in {seconds}")
        else:
            self.say(f"rolled back in {seconds}")

    def summary_failed(self, pipeline: Pipeline, failure: Failure) -> None:
        state = pipeline.now()
        sys.stdout.flush()
        sys.stderr.write(
            f"juncture: {pipeline.verb} failed in {failure.phase}: {failure.message} ({state})\n"
        )
