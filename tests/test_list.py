"""`juncture list [EVENT] [-v]`: layers, the order rule, and each event's hooks with source and why."""

from __future__ import annotations

import os

import pytest

from conftest import ProjectDir

SCRIPT = "#!/bin/sh\nexit 0\n"


@pytest.fixture
def layered(project: ProjectDir) -> ProjectDir:
    """Two layers: base has a flat pre-deploy and drop-ins 10-a, 20-b; over replaces 10-a."""
    project.config("app: shop\nhooks_path: [base, over]\n")
    project.hook("pre-deploy", None, SCRIPT, layer="base")
    project.hook("pre-deploy", "20-b", SCRIPT, layer="base")
    project.hook("pre-deploy", "10-a", SCRIPT, layer="base")
    project.hook("pre-deploy", "10-a", SCRIPT, layer="over")
    project.hook("pre-deploy", "30-c.bak", SCRIPT, layer="base")
    project.hook("pre-deploy", "40-d", SCRIPT, layer="over", mode=0o644)
    return project


def list_lines(project: ProjectDir, *args: str) -> list[str]:
    result = project.run("list", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_list_shows_layers_and_order_rule(layered: ProjectDir) -> None:
    lines = list_lines(layered)

    assert lines[0] == "layers: 1. base, 2. over"
    assert lines[1].startswith("order: ")
    assert "flat file <event> (main hook) runs first" in lines[1]
    assert "byte order of name" in lines[1]
    assert "later layer replaces the earlier one" in lines[1]


def test_list_shows_hooks_in_order_with_source_and_replaced_path(layered: ProjectDir) -> None:
    lines = list_lines(layered, "pre-deploy")

    hooks = [line for line in lines if line.startswith("  ") and not line.startswith("  skipped:")]
    assert len(hooks) == 3
    assert hooks[0] == "  1. pre-deploy  base/pre-deploy  — main hook (flat file), layer 1 of 2"
    assert hooks[2] == "  3. 20-b  base/pre-deploy.d/20-b  — drop-in of pre-deploy.d/, layer 1 of 2"
    head, _, replaced = hooks[1].partition(", replaces ")
    assert head == "  2. 10-a  over/pre-deploy.d/10-a  — drop-in of pre-deploy.d/, layer 2 of 2"
    # the replaced file, shown relative to the project or absolute
    assert os.path.join(layered.root, replaced) == str(layered.root / "base" / "pre-deploy.d" / "10-a")


def test_list_without_event_shows_every_event_with_hooks(layered: ProjectDir) -> None:
    layered.hook("custom-thing", "10-x", SCRIPT, layer="over")

    lines = list_lines(layered)

    headers = [line for line in lines if line and not line.startswith((" ", "layers:", "order:"))]
    assert [header.split()[0] for header in headers] == ["custom-thing", "pre-deploy"]
    assert "not declared: orphan" in headers[0]
    assert "built-in" in headers[1]
    assert "  1. 10-x  over/custom-thing.d/10-x  — drop-in of custom-thing.d/, layer 2 of 2" in lines


def test_list_verbose_shows_skipped_files_with_reasons(layered: ProjectDir) -> None:
    lines = list_lines(layered, "pre-deploy", "-v")

    assert "  skipped: base/pre-deploy.d/30-c.bak  — editor or package leftover ('.bak')" in lines
    assert "  skipped: over/pre-deploy.d/40-d  — not executable (chmod +x to enable)" in lines


def test_list_without_verbose_does_not_show_skipped_files(layered: ProjectDir) -> None:
    for args in (("pre-deploy",), ()):
        output = "\n".join(list_lines(layered, *args))

        assert "skipped" not in output
        assert "30-c.bak" not in output
        assert "40-d" not in output


def test_list_verbose_shows_masked_file(layered: ProjectDir) -> None:
    mask = layered.root / "over" / "pre-deploy.d" / "20-b"
    mask.symlink_to(os.devnull)

    lines = list_lines(layered, "pre-deploy", "-v")

    assert not any(line.startswith("  3. ") for line in lines)
    assert "  skipped: over/pre-deploy.d/20-b  — masked (symlink to /dev/null)" in lines


def test_list_of_event_without_hooks_says_no_hooks(project: ProjectDir) -> None:
    lines = list_lines(project, "post-deploy")

    assert lines[-2].startswith("post-deploy  (abort, timeout 900 s")
    assert lines[-1] == "  (no hooks)"


def test_list_ignores_hidden_drop_in_directory(layered: ProjectDir) -> None:
    layered.hook(".old", "10-x", SCRIPT, layer="base")

    result = layered.run("list")

    assert result.returncode == 0, result.stderr
    assert ".old" not in result.stdout
