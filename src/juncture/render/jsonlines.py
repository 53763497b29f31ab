"""`--json`: one JSON object per line on stdout, and nothing else there."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from ..model.outcome import HookResult, RunResult, describe
from ..plan.plan import Plan

__all__ = ["JsonReporter", "emit"]


def emit(*objs: dict[str, Any], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write("".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objs))
    out.flush()


class JsonReporter:
    wants_lines = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self.out = stream

    def run_started(self, plan: Plan) -> None:
        event = plan.event
        emit(
            {
                "type": "run-start",
                "run_id": plan.run_id,
                "event": event.name,
                "host": plan.target.name,
                "revision": event.revision,
                "verb": plan.verb,
                "failure": event.failure,
                "timeout": event.timeout,
                "parallel": event.parallel,
                "hooks": [{"hook": h.label, "path": h.path, "layer": h.layer + 1} for h in plan.hooks],
            },
            stream=self.out,
        )

    def hook_started(self, result: HookResult) -> None:
        emit(
            {
                "type": "hook-start",
                "hook": result.hook.label,
                "path": result.hook.path,
                "host": result.target,
            },
            stream=self.out,
        )

    def hook_output(self, result: HookResult, lines: list[bytes]) -> None:
        label = result.hook.label
        emit(
            *(
                {
                    "type": "hook-output",
                    "hook": label,
                    "host": result.target,
                    "line": line.decode("utf-8", "replace"),
                }
                for line in lines
            ),
            stream=self.out,
        )

    def hook_finished(self, result: HookResult) -> None:
        emit(
            {
                "type": "hook-end",
                "hook": result.hook.label,
                "host": result.target,
                "path": result.hook.path,
                "status": result.status,
                "tolerated": result.tolerated,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "duration": round(result.duration, 6),
                "message": describe(result),
                "log": result.log_path,
            },
            stream=self.out,
        )

    def run_finished(self, result: RunResult) -> None:
        emit(
            {
                "type": "run-end",
                "run_id": result.plan.run_id,
                "event": result.plan.event.name,
                "host": result.plan.target.name,
                "status": result.status,
                "exit_code": result.exit_code,
                "duration": round(result.duration, 6),
                "message": result.message(),
            },
            stream=self.out,
        )
