"""The environment contract every hook gets, with a configurable prefix (JUNCTURE_, KAMAL_, ...)."""

from __future__ import annotations

import os
import time

from ..errors import UsageError
from .event import EventSpec
from .recorded import check

__all__ = [
    "OWNED",
    "SETTABLE",
    "Identity",
    "contract",
    "git_commit",
    "identity",
    "new_run_id",
    "resolve_context",
]

# Set by juncture for every hook; a context field may not use these names.
OWNED = (
    "EVENT",
    "REVISION",
    "VERB",
    "RUN_ID",
    "RECORDED_AT",
    "PERFORMER",
    "DRY_RUN",
    "PHASE",
    "OUTPUT",
    "OUTPUT_READONLY",
    # the deploy pipeline's facts
    "DEPLOY_TO",
    "RELEASE",
    "RELEASE_PATH",
    "CURRENT_PATH",
    "PREVIOUS_RELEASE",
    "ERROR",
    "ERROR_PHASE",
    "ERROR_HOOK",
    "ERROR_HOST",
    "ERROR_EXIT_CODE",
)
# Describe the deployment; `fire --set version=...` may give them.
SETTABLE = ("APP", "VERSION", "STAGE", "HOSTS", "HOST", "ROLES")
RECORDED = ("VERSION", "STAGE")  # written to the run history, so checked (recorded.py)


class Identity:
    """Who runs juncture, where and when: read once per run."""

    def __init__(self, performer: str, recorded_at: str, started: float) -> None:
        self.performer = performer
        self.recorded_at = recorded_at
        self.started = started


def identity() -> Identity:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    now = time.time()
    performer = check("user@host (from $USER or $LOGNAME)", f"{user}@{os.uname().nodename}")
    return Identity(performer, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), now)


def new_run_id(started: float) -> str:
    """Sortable by time, unique across processes: 20261121T054300Z-3f9a2c."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + os.urandom(3).hex()


def resolve_context(spec: EventSpec, given: dict[str, str]) -> dict[str, str]:
    """Check `--set` values against the event's declared fields; apply defaults. Keys are upper-cased."""
    context = {key.upper(): value for key, value in given.items()}
    for key in context:
        if key in OWNED:
            raise UsageError(f"{key.lower()} is set by juncture and cannot be given with --set")
        if key in RECORDED:
            check(key.lower(), context[key])
    if spec.fields is None:
        return context
    declared = {f.env_name: f for f in spec.fields}
    for key in context:
        if key not in declared and key not in SETTABLE:
            names = ", ".join(f.name for f in spec.fields) or "none"
            raise UsageError(f"event {spec.name} has no field {key.lower()!r} (declared: {names})")
    for env_name, field_spec in declared.items():
        if env_name not in context:
            if field_spec.default is not None:
                context[env_name] = field_spec.default
            elif field_spec.required:
                raise UsageError(f"event {spec.name} needs --set {field_spec.name}=VALUE")
    return context


def contract(
    prefix: str,
    spec: EventSpec,
    *,
    verb: str,
    run_id: str,
    who: Identity,
    app: str,
    version: str,
    dry_run: bool,
    context: dict[str, str],
) -> dict[str, str]:
    """The variables juncture gives a hook on the local target (without the caller's environment)."""
    values = {
        "EVENT": spec.name,
        "REVISION": str(spec.revision),
        "VERB": verb,
        "RUN_ID": run_id,
        "RECORDED_AT": who.recorded_at,
        "PERFORMER": who.performer,
        "APP": app,
        "VERSION": version,
        "STAGE": "",
        "HOSTS": "localhost",
        "HOST": "localhost",
        "ROLES": "",
        "PHASE": "",
        "DRY_RUN": "true" if dry_run else "false",
    }
    values.update(context)
    # Kamal's names for the same facts, so Kamal hooks run unchanged under env_prefix: KAMAL_.
    version = values["VERSION"]
    values.setdefault("SERVICE", values["APP"])
    values.setdefault("SERVICE_VERSION", f"{values['APP']}@{version[:7]}" if version else values["APP"])
    values.setdefault("COMMAND", verb)
    values.setdefault("DESTINATION", values["STAGE"])
    values.setdefault("ROLE", values["ROLES"])
    return {prefix + key: value for key, value in values.items()}


def git_commit(directory: str) -> str:
    """The commit checked out in the git work tree holding `directory`, or "" (read without running git)."""
    here = os.path.abspath(directory)
    while True:
        dot_git = os.path.join(here, ".git")
        if os.path.exists(dot_git):
            break
        parent = os.path.dirname(here)
        if parent == here:
            return ""
        here = parent
    try:
        if os.path.isfile(dot_git):  # a worktree or submodule: "gitdir: PATH"
            with open(dot_git) as handle:
                dot_git = os.path.join(here, handle.read().strip().removeprefix("gitdir: "))
        with open(os.path.join(dot_git, "HEAD")) as handle:
            head = handle.read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        common = dot_git
        if os.path.isfile(os.path.join(dot_git, "commondir")):
            with open(os.path.join(dot_git, "commondir")) as handle:
                common = os.path.join(dot_git, handle.read().strip())
        ref_file = os.path.join(common, ref)
        if os.path.isfile(ref_file):
            with open(ref_file) as handle:
                return handle.read().strip()
        with open(os.path.join(common, "packed-refs")) as handle:
            for line in handle:
                sha, _, name = line.strip().partition(" ")
                if name == ref:
                    return sha
    except OSError:
        pass
    return ""
