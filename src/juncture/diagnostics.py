"""`juncture check`: what is wrong with the hooks before anything runs. Pure given its inputs."""

from __future__ import annotations

import os

from ._util.record import record
from .project import Project
from .sources.rundirs import Discovery

__all__ = ["Finding", "diagnose"]

# Skips that are intentional and so not worth a warning.
_QUIET_SKIPS = ("masked", "overridden")
_SKIP_MESSAGES = {
    "name": "skipped by the name rule: {reason}",
    "not-executable": "{reason}",
    "broken-symlink": "not run: {reason}",
    "not-regular": "not run: {reason}",
    "missing": "not run: {reason}",
}


@record
class Finding:
    severity: str  # note | warning | error
    code: str
    file: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def diagnose(project: Project, found: Discovery, remembered: dict[str, int]) -> list[Finding]:
    """Findings about `found` (the discovered hooks); `remembered` is each event's revision at the last check."""
    findings: list[Finding] = []
    config = project.config
    for skip in found.skipped:
        if skip.code in _QUIET_SKIPS:
            continue
        severity = "error" if skip.code == "unreadable" else "warning"
        if skip.code == "name" and skip.path.endswith(".sample"):
            severity = "note"  # inert on purpose, as `juncture init` ships them
        message = _SKIP_MESSAGES.get(skip.code, "{reason}").format(reason=skip.reason)
        findings.append(Finding(severity, skip.code, skip.path, message))

    for event, hooks in found.hooks.items():
        if not project.known(event):
            for path in found.sources.get(event, ()):
                findings.append(
                    Finding(
                        "warning",
                        "orphan",
                        path,
                        f"hook for unknown event {event!r}: it only runs when fired by name; declare it "
                        f"under events: in {os.path.basename(config.file)} or remove it",
                    )
                )
        for hook in hooks:
            findings.extend(_file_findings(hook.path))

    for name, spec in config.events.items():
        before = remembered.get(name)
        if before is not None and spec.revision > before:
            findings.append(
                Finding(
                    "warning",
                    "revision",
                    config.file,
                    f"event {name} revised from {before} to {spec.revision} since the last check; "
                    f"review the environment contract of its hooks ({name}.d/)",
                    line=_line(spec.source),
                )
            )
    return findings


def _file_findings(path: str) -> list[Finding]:
    findings = []
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return [Finding("warning", "unreadable", path, f"cannot read: {exc.strerror}")]
    if not head.startswith(b"#!") and head != b"\x7fELF":
        findings.append(
            Finding("warning", "no-shebang", path, "no #! line: the kernel cannot exec it, so it will fail")
        )
    if st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit)
        findings.append(
            Finding("warning", "writable", path, f"writable by {who}: they can change what juncture runs")
        )
    return findings


def _line(source: str) -> int | None:
    _, _, line = source.rpartition(":")
    return int(line) if line.isdigit() else None
