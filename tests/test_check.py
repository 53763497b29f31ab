"""`juncture check`: findings about hooks and configuration, as text and as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import ProjectDir

SCRIPT = "#!/bin/sh\nexit 0\n"
HOOKS = Path(".juncture/hooks")


def check_json(project: ProjectDir) -> dict[str, Any]:
    result = project.run("check", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def by_code(doc: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [finding for finding in doc["findings"] if finding["code"] == code]


def test_clean_project_has_no_findings(project: ProjectDir) -> None:
    project.hook("pre-deploy", "10-ok", SCRIPT)

    result = project.run("check")

    assert result.returncode == 0
    assert result.stdout == "check: 0 error(s), 0 warning(s)\n"
    assert check_json(project) == {"findings": [], "errors": 0, "warnings": 0}


def test_hook_dir_for_undeclared_event_is_an_orphan(project: ProjectDir) -> None:
    project.hook("custom-thing", "10-x", SCRIPT)

    doc = check_json(project)

    [finding] = by_code(doc, "orphan")
    assert finding["severity"] == "warning"
    assert finding["file"] == str(project.root / HOOKS / "custom-thing.d")
    assert "custom-thing" in finding["message"]


def test_flat_hook_for_undeclared_event_is_an_orphan(project: ProjectDir) -> None:
    flat = project.hook("custom-thing", None, SCRIPT)

    doc = check_json(project)

    assert [(f["file"], f["severity"]) for f in by_code(doc, "orphan")] == [(str(flat), "warning")]


def test_orphan_is_printed_with_relative_path_and_code(project: ProjectDir) -> None:
    project.hook("custom-thing", "10-x", SCRIPT)

    result = project.run("check")

    assert result.returncode == 0
    assert "warning: .juncture/hooks/custom-thing.d: hook for unknown event 'custom-thing'" in result.stdout
    assert "[orphan]" in result.stdout
    assert result.stdout.endswith("check: 0 error(s), 1 warning(s)\n")


@pytest.mark.parametrize("event", ["pre-deploy", "post-deploy", "deploy:updated"])
def test_hook_for_built_in_event_is_not_an_orphan(project: ProjectDir, event: str) -> None:
    project.hook(event, "10-x", SCRIPT)
    project.hook(event, None, SCRIPT)

    doc = check_json(project)

    assert by_code(doc, "orphan") == []


def test_colon_in_event_name_is_a_directory_level_on_disk(project: ProjectDir) -> None:
    flat = project.hook("deploy:updated", None, SCRIPT)
    drop_in = project.hook("deploy:updated", "10-x", SCRIPT)
    assert flat == project.root / ".juncture/hooks/deploy/updated"
    assert drop_in == project.root / ".juncture/hooks/deploy/updated.d/10-x"
    assert "2 ok" in project.run("fire", "deploy:updated").stdout

    doc = check_json(project)

    assert doc["findings"] == []


def test_colon_spelled_literally_on_disk_is_reported_with_the_right_spelling(project: ProjectDir) -> None:
    literal = project.root / ".juncture/hooks/deploy:updated.d"
    literal.mkdir(parents=True)
    (literal / "10-x").write_text(SCRIPT)
    (literal / "10-x").chmod(0o755)

    doc = check_json(project)

    [finding] = [f for f in doc["findings"] if f["file"] == str(literal)]
    assert "deploy/updated.d" in finding["message"]
    assert "event deploy:updated: no hooks" in project.run("fire", "deploy:updated").stdout


def test_hook_for_event_declared_in_config_is_not_an_orphan(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  custom-thing:\n    timeout: 5\n")
    project.hook("custom-thing", "10-x", SCRIPT)

    doc = check_json(project)

    assert by_code(doc, "orphan") == []


def test_revision_bump_is_warned_once_with_config_line(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e:\n    revision: 1\n")
    assert by_code(check_json(project), "revision") == []

    project.config("app: shop\nevents:\n  e:\n    revision: 2\n")
    second = project.run("check")
    third = check_json(project)

    assert second.returncode == 0
    assert "warning: juncture.yaml:3: event e revised from 1 to 2" in second.stdout
    assert "[revision]" in second.stdout
    assert by_code(third, "revision") == []


def test_revision_bump_finding_names_config_file_and_line_in_json(project: ProjectDir) -> None:
    config = project.config("app: shop\nevents:\n  other: {}\n  e:\n    revision: 1\n")
    check_json(project)
    project.config("app: shop\nevents:\n  other: {}\n  e:\n    revision: 2\n")

    doc = check_json(project)

    [finding] = by_code(doc, "revision")
    assert (finding["severity"], finding["file"], finding["line"]) == ("warning", str(config), 4)
    assert doc["warnings"] == 1


def test_leftover_file_name_is_a_name_warning(project: ProjectDir) -> None:
    leftover = project.hook("pre-deploy", "10-x.bak", SCRIPT)

    doc = check_json(project)

    assert by_code(doc, "name") == [
        {
            "severity": "warning",
            "code": "name",
            "file": str(leftover),
            "message": "skipped by the name rule: editor or package leftover ('.bak')",
        }
    ]
    assert doc["warnings"] == 1


def test_sample_file_is_a_note_and_not_counted_as_warning(project: ProjectDir) -> None:
    sample = project.hook("pre-deploy", "10-x.sample", SCRIPT)

    doc = check_json(project)

    assert [(f["severity"], f["file"]) for f in by_code(doc, "name")] == [("note", str(sample))]
    assert (doc["errors"], doc["warnings"]) == (0, 0)


def test_non_executable_hook_is_warned(project: ProjectDir) -> None:
    hook = project.hook("pre-deploy", "10-x", SCRIPT, mode=0o644)

    doc = check_json(project)

    assert [(f["severity"], f["file"]) for f in by_code(doc, "not-executable")] == [("warning", str(hook))]


def test_broken_symlink_is_warned(project: ProjectDir) -> None:
    directory = project.root / HOOKS / "pre-deploy.d"
    directory.mkdir(parents=True)
    link = directory / "10-x"
    link.symlink_to(project.root / "gone")

    doc = check_json(project)

    [finding] = by_code(doc, "broken-symlink")
    assert (finding["severity"], finding["file"]) == ("warning", str(link))
    assert "gone" in finding["message"]


def test_fifo_is_warned_as_not_regular(project: ProjectDir) -> None:
    directory = project.root / HOOKS / "pre-deploy.d"
    directory.mkdir(parents=True)
    fifo = directory / "10-x"
    os.mkfifo(fifo, 0o755)

    doc = check_json(project)

    [finding] = by_code(doc, "not-regular")
    assert (finding["severity"], finding["file"]) == ("warning", str(fifo))
    assert "FIFO" in finding["message"]


def test_executable_script_without_shebang_is_warned(project: ProjectDir) -> None:
    hook = project.hook("pre-deploy", "10-x", "echo no shebang\n")

    doc = check_json(project)

    assert [(f["severity"], f["file"]) for f in by_code(doc, "no-shebang")] == [("warning", str(hook))]


@pytest.mark.parametrize(("mode", "who"), [(0o775, "group"), (0o757, "others")])
def test_hook_writable_by_group_or_others_is_warned(project: ProjectDir, mode: int, who: str) -> None:
    hook = project.hook("pre-deploy", "10-x", SCRIPT)
    hook.chmod(mode)  # chmod, not the creation mode, so the umask cannot clear the bits

    doc = check_json(project)

    [finding] = by_code(doc, "writable")
    assert (finding["severity"], finding["file"]) == ("warning", str(hook))
    assert f"writable by {who}" in finding["message"]


def test_check_exits_zero_with_only_warnings(project: ProjectDir) -> None:
    project.hook("custom-thing", "10-x", SCRIPT)
    project.hook("pre-deploy", "10-x.bak", SCRIPT)
    project.hook("pre-deploy", "20-y", "echo no shebang\n")

    result = project.run("check")

    assert result.returncode == 0
    assert "check: 0 error(s), 3 warning(s)" in result.stdout
    assert {line.split(":", 1)[0] for line in result.stdout.splitlines()[:-1]} == {"warning"}


def test_check_exits_2_when_config_does_not_parse(project: ProjectDir) -> None:
    project.config("app: shop\nevents: [unclosed\n")

    result = project.run("check")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("juncture: error: ")
    assert "juncture.yaml" in result.stderr
