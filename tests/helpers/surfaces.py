"""Every surface a run's output reaches, to search for secrets: what the commands printed (the terminal,
`-v`, `--json`), every file under .juncture/logs, and for every recorded run `history RUN`,
`history RUN --json` and the `history RUN --html` timeline.

JSON and HTML are searched both as written and decoded (a secret of several lines is `\\n`-escaped in
JSON; `&`, `<` or `"` are escaped in HTML), so escaping cannot hide a leak from the search.
"""

from __future__ import annotations

import html
import json
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from conftest import ProjectDir

__all__ = ["assert_hidden", "read_logs", "secret_lines", "surfaces"]


def surfaces(project: ProjectDir, printed: Mapping[str, subprocess.CompletedProcess[str]]) -> dict[str, str]:
    """{where: text}. `printed` names the runs whose stdout and stderr to include (e.g. "-v": result)."""
    found: dict[str, str] = {}
    for name, done in printed.items():
        found[f"{name} stdout"] = _with_decoded_json(done.stdout)
        found[f"{name} stderr"] = done.stderr
    logs = project.root / ".juncture" / "logs"
    for path in sorted(p for p in logs.rglob("*") if p.is_file()):
        found[f"log {path.relative_to(logs)}"] = path.read_bytes().decode("utf-8", "replace")
    listed = _ok(project.run("history", "--json"))
    for run in json.loads(listed.stdout):
        run_id = run["id"]
        found[f"history {run_id}"] = _ok(project.run("history", run_id)).stdout
        found[f"history {run_id} --json"] = _with_decoded_json(
            _ok(project.run("history", run_id, "--json")).stdout
        )
        page = project.root.parent / f"timeline-{run_id}.html"
        _ok(project.run("history", run_id, "--html", str(page)))
        text = page.read_text()
        found[f"history {run_id} --html"] = text + "\n" + html.unescape(text)
    return found


def secret_lines(*secrets: str) -> list[str]:
    """What must show nowhere: each secret whole, and each line of one of several lines."""
    lines = [line for secret in secrets for line in secret.split("\n")]
    return list(dict.fromkeys([*secrets, *lines]))


def assert_hidden(found: Mapping[str, str], secrets: Iterable[str]) -> None:
    """No secret line on any surface; on failure, say which line showed where."""
    leaks = [f"{line!r} in {where}" for where, text in found.items() for line in secrets if line in text]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def _with_decoded_json(text: str) -> str:
    """`text`, then the strings of every line of it that is a JSON document (or the whole if it is one)."""
    decoded: list[str] = []
    for chunk in [text, *text.splitlines()]:
        try:
            doc = json.loads(chunk)
        except ValueError:
            continue
        decoded.extend(_strings(doc))
    return "\n".join([text, *decoded])


def _strings(doc: Any) -> Iterable[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def read_logs(project: ProjectDir) -> str:
    """Every log file of the project, concatenated (to check that output reached them)."""
    logs = project.root / ".juncture" / "logs"
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(logs.rglob("*")) if p.is_file())
