"""Helpers for Python hooks, with maand's names: `from juncture_hook import put_job_variable`.

Standard library only: juncture puts this directory on PYTHONPATH for hooks on this machine (on a host,
copy this file next to your hooks). Writes go to the hook's outputs file, so they are committed only
when the hook succeeds, and refused during a health check; reads see what earlier hooks of the run
committed (`<PREFIX>VAR_<KEY>`).
"""

from __future__ import annotations

import os
import re
import secrets

__all__ = [
    "get_job_variable",
    "get_variable",
    "put_job_secret",
    "put_job_variable",
    "put_rollout_order",
    "put_secret",
    "put_variable",
]


class Result:
    """maand's hooks call `.raise_for_status()` on what a put returns."""

    def __init__(self, error: str = "") -> None:
        self.ok = not error
        self.error = error

    def raise_for_status(self) -> Result:
        if self.error:
            raise RuntimeError(self.error)
        return self


def _prefix() -> str:
    """The project's environment prefix (JUNCTURE_, KAMAL_, ...): the one with both OUTPUT and RUN_ID."""
    for name in os.environ:
        if name.endswith("RUN_ID") and name[: -len("RUN_ID")] + "OUTPUT" in os.environ:
            return name[: -len("RUN_ID")]
    return "JUNCTURE_"


def _put(key: str, value: str, ns: str | None, secret: bool) -> Result:
    prefix = _prefix()
    path = os.environ.get(prefix + "OUTPUT")
    if not path:
        return Result(f"{prefix}OUTPUT is not set: not running as a juncture hook")
    if os.environ.get(prefix + "OUTPUT_READONLY"):
        return Result(f"put {key}: refused, this hook is a read-only check")
    head = (f"@{ns} " if ns else "") + ("secret " if secret else "")
    if "\n" in value:
        delimiter = f"JUNCTURE_EOF_{secrets.token_hex(8)}"
        line = f"{head}{key}<<{delimiter}\n{value}\n{delimiter}\n"
    else:
        line = f"{head}{key}={value}\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
    return Result()


def put_variable(key: str, value: str) -> Result:
    return _put(key, str(value), None, False)


def put_secret(key: str, value: str) -> Result:
    return _put(key, str(value), None, True)


def put_job_variable(key: str, value: str, job: str | None = None) -> Result:
    """A variable; with `job`, in the namespace `job:JOB`, else in the run's (the stage's, or app)."""
    return _put(key, str(value), f"job:{job}" if job else None, False)


def put_job_secret(key: str, value: str, job: str | None = None) -> Result:
    return _put(key, str(value), f"job:{job}" if job else None, True)


def put_rollout_order(order: str | list[str]) -> Result:
    """This deploy's rollout order (host names, comma-separated or a list): every host exactly once."""
    text = order if isinstance(order, str) else ",".join(order)
    return _put("rollout_order", text, None, False)


def get_variable(key: str) -> str | None:
    """A variable an earlier hook of this run committed (app, stage or this host's namespace)."""
    return os.environ.get(_prefix() + "VAR_" + re.sub(r"[^A-Za-z0-9_]", "_", key).upper())


def get_job_variable(key: str, job: str | None = None) -> str | None:
    """maand's name for `get_variable` (job namespaces are for templates: `var(KEY, ns="job:JOB")`)."""
    return get_variable(key)
