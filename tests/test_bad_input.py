"""Bad input ends with exit code 2 and one `juncture: error:` line on stderr, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ProjectDir

SCRIPT = "#!/bin/sh\nexit 0\n"


def juncture(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "juncture", *args], capture_output=True, text=True, timeout=60
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line, after checking the exit code, the line count and the absence of a traceback."""
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("juncture: error: ")
    return lines[0]


def test_malformed_yaml_names_file_and_line(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e: {timeout: [1, 2}\nother: 1\n")

    line = error_line(project.run("check"))

    assert "juncture.yaml:3:" in line
    assert "invalid YAML" in line


def test_unknown_top_level_key_suggests_the_close_one(project: ProjectDir) -> None:
    project.config("app: shop\nhooks_pth: x\n")

    line = error_line(project.run("check"))

    assert "juncture.yaml:2:" in line
    assert "hooks_pth: unknown key" in line
    assert "did you mean 'hooks_path'?" in line


def test_unknown_event_key_names_key_path_and_suggestion(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e:\n    timout: 3\n")

    line = error_line(project.run("list"))

    assert "==> At key: events ==> At key: e" in line
    assert "timout: unknown key" in line
    assert "'timeout'" in line
    assert "juncture.yaml:4:" in line


def test_wrong_value_type_names_expected_values_and_line(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e:\n    timeout: 3\n    failure: maybe\n")

    line = error_line(project.run("fire", "e"))

    assert "expected abort or continue" in line
    assert "juncture.yaml:5:" in line
    assert "==> At key: events ==> At key: e =====> failure:" in line


def test_duplicate_yaml_key_is_an_error_with_line(project: ProjectDir) -> None:
    project.config("app: shop\nenv_prefix: JUNCTURE_\napp: other\n")

    line = error_line(project.run("check"))

    assert "juncture.yaml:3:" in line
    assert "app: duplicate key" in line


def test_a_key_overriding_a_merged_one_is_no_duplicate(project: ProjectDir) -> None:
    project.config(
        """\
        app: shop
        events:
          slow: &slow {timeout: 30, failure: continue}
          slower:
            <<: *slow
            timeout: 60
        """
    )

    done = project.run("fire", "slower", "--dry-run", "--json")

    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["timeout"], plan["failure"]) == (60.0, "continue")  # merged, then overridden


def test_set_without_equals_sign_is_an_error(project: ProjectDir) -> None:
    line = error_line(project.run("fire", "e", "--set", "novalue"))

    assert "--set 'novalue': expected KEY=VALUE" in line


@pytest.mark.parametrize("event", ["a/b", "", "../up", ".hidden"])
def test_event_name_that_cannot_be_a_directory_name_is_an_error(project: ProjectDir, event: str) -> None:
    marker = project.root / "ran"
    project.hook("e", "10-x", f"#!/bin/sh\ntouch {marker}\n")

    line = error_line(project.run("fire", event))

    assert "event name" in line
    assert not marker.exists()


def test_hooks_path_that_does_not_exist_is_an_error(project: ProjectDir) -> None:
    project.config("app: shop\nhooks_path: [hooks, nothere]\n")
    (project.root / "hooks").mkdir()

    line = error_line(project.run("list"))

    assert f"hooks directory {project.root / 'nothere'} does not exist" in line
    assert "juncture.yaml:2:" in line


def test_default_hooks_path_that_is_a_file_is_an_error(project: ProjectDir) -> None:
    (project.root / ".juncture").mkdir()
    (project.root / ".juncture" / "hooks").write_text("not a directory\n")

    line = error_line(project.run("check"))

    assert ".juncture/hooks" in line


def test_project_directory_that_does_not_exist_is_an_error() -> None:
    line = error_line(juncture("-C", "/nonexistent", "check"))

    assert "/nonexistent: not a directory" in line


def test_directory_without_juncture_yaml_upward_is_an_error(tmp_path: Path) -> None:
    assert not any((parent / "juncture.yaml").exists() for parent in [tmp_path, *tmp_path.parents])

    line = error_line(juncture("-C", str(tmp_path), "list"))

    assert f"no juncture.yaml in {tmp_path} or any parent" in line


def test_unknown_set_field_for_event_with_declared_fields_is_an_error(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e:\n    fields: [project]\n")

    line = error_line(project.run("fire", "e", "--set", "project=x", "--set", "bogus=1"))

    assert "event e has no field 'bogus' (declared: project)" in line


def test_missing_required_field_is_an_error(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  e:\n    fields:\n      project: {required: true}\n")
    marker = project.root / "ran"
    project.hook("e", "10-x", f"#!/bin/sh\ntouch {marker}\n")

    line = error_line(project.run("fire", "e"))

    assert "event e needs --set project=VALUE" in line
    assert not marker.exists()


def test_unknown_subcommand_is_an_error(project: ProjectDir) -> None:
    line = error_line(project.run("bogus"))

    assert re.search(r"invalid choice: 'bogus'", line)


def test_project_search_goes_upward_from_subdirectory(project: ProjectDir) -> None:
    marker = project.root / "ran"
    project.hook("e", "10-x", f'#!/bin/sh\necho "$PWD" > {marker}\n')
    sub = project.root / "src" / "deep"
    sub.mkdir(parents=True)

    result = juncture("-C", str(sub), "fire", "e")

    assert result.returncode == 0, result.stderr
    assert marker.read_text().strip() == str(project.root)  # hooks run in the project root
