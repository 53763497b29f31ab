"""Terminal output: one line per hook, the output of failed hooks, live lines under -v."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from ..model.outcome import FAILED, HookResult, RunResult, describe
from ..plan.plan import Plan

__all__ = ["TerminalReporter", "format_duration"]


def format_duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


class TerminalReporter:
    """`mode` is normal, verbose (stream every line live) or quiet (failures only). Within a pipeline,
    hook lines are indented under their phase and the per-event summary line is left out."""

    def __init__(
        self,
        mode: str = "normal",
        stream: BinaryIO | None = None,
        indent: str = "",
        summary: bool = True,
        note: str = "",
    ) -> None:
        self.mode = mode
        self.indent = indent
        self.summary = summary
        self.note = f"; {note}" if note else ""  # ends the summary line: hooks skipped as not executable
        self.out = stream or sys.stdout.buffer
        self.wants_lines = mode == "verbose"
        color = self.out.isatty() and not os.environ.get("NO_COLOR")
        encoding = (getattr(sys.stdout, "encoding", None) or "ascii") if stream is None else "utf-8"
        try:
            "✓✗".encode(encoding)
            ok, bad = "✓", "✗"
        except (UnicodeEncodeError, LookupError):
            ok, bad = "ok", "FAIL"
        self.ok = f"\033[32m{ok}\033[0m" if color else ok
        self.bad = f"\033[31m{bad}\033[0m" if color else bad

    def write(self, text: str) -> None:
        self.out.write(text.encode("utf-8", "replace"))
        self.out.flush()

    def run_started(self, plan: Plan) -> None:
        if self.mode != "quiet" and not plan.hooks:
            self.write(f"event {plan.event.name}: no hooks{self.note}\n")

    def lead(self, result: HookResult) -> str:
        """The indent, and `[host] ` for a hook that ran anywhere but here."""
        return self.indent if result.target == "local" else f"{self.indent}[{result.target}] "

    def hook_started(self, result: HookResult) -> None:
        if self.mode == "verbose":
            self.write(f"{self.lead(result)}→ {result.hook.label}\n")

    def hook_output(self, result: HookResult, lines: list[bytes]) -> None:
        where = "" if result.target == "local" else f"{result.target} "
        prefix = f"{self.indent}[{where}{result.hook.name}] ".encode()
        self.out.write(prefix + (b"\n" + prefix).join(lines) + b"\n")
        self.out.flush()

    def hook_finished(self, result: HookResult) -> None:
        failed = result.status in FAILED
        if self.mode == "quiet" and not failed:
            return
        if result.status == "skipped":
            self.write(f"{self.lead(result)}- {result.hook.label}  {describe(result)}\n")
            return
        mark = self.ok if result.ok else self.bad
        detail = "" if result.ok else f"  {describe(result)}"
        if result.tolerated:
            detail += " (continue_on_error)"
        self.write(
            f"{self.lead(result)}{mark} {result.hook.label}{detail}  {format_duration(result.duration)}\n"
        )
        if failed and self.mode != "verbose":
            self.write_output(result)

    def write_output(self, result: HookResult) -> None:
        earlier = result.output_bytes - len(result.tail)
        if earlier > 0:
            self.write(
                f"{self.indent}    … {earlier} earlier bytes not shown; full output: {result.log_path}\n"
            )
        text = result.tail.decode("utf-8", "replace")
        for line in text.splitlines():
            self.write(f"{self.indent}    {line}\n")

    def run_finished(self, result: RunResult) -> None:
        plan = result.plan
        not_started = len(plan.hooks) - len(result.hooks)
        if self.mode == "quiet" or not plan.hooks or not self.summary:
            return
        counts = [f"{sum(r.ok for r in result.hooks)} ok"]
        if result.failures:
            counts.append(f"{len(result.failures)} failed")
        skipped = sum(r.status == "skipped" for r in result.hooks)
        if skipped:
            counts.append(f"{skipped} skipped")
        if not_started:
            counts.append(f"{not_started} not started")
        policy = f" ({plan.event.failure})" if any(not r.tolerated for r in result.failures) else ""
        self.write(
            f"event {plan.event.name}: {', '.join(counts)}{policy} in {format_duration(result.duration)}"
            f"{self.note}\n"
        )
