"""The parse cache of juncture.yaml: later runs skip PyYAML, and an edit is always seen."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import ProjectDir

YAML_LOADED = (
    "import sys; from juncture.cli import main; code = main(['-C', sys.argv[1], 'list']); "
    "print('yaml-imported' if 'yaml' in sys.modules else 'yaml-not-imported'); sys.exit(code)"
)


def settle(project: ProjectDir) -> None:
    """Make juncture.yaml look edited a minute ago (only settled files are cached)."""
    past = time.time() - 60
    os.utime(project.root / "juncture.yaml", (past, past))


def run_list(project: ProjectDir) -> str:
    done = subprocess.run(
        [sys.executable, "-c", YAML_LOADED, str(project.root)], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_settled_config_is_parsed_once_then_read_without_pyyaml(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  alpha-event: {}\n")
    settle(project)

    assert "yaml-imported" in run_list(project)
    assert (project.root / ".juncture/state/config.cache").is_file()
    second = run_list(project)

    assert "yaml-not-imported" in second
    assert "alpha-event" in second


def test_edit_of_a_cached_config_is_seen(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  alpha-event: {}\n")
    settle(project)
    run_list(project)

    project.config("app: shop\nevents:\n  omega-event: {}\n")  # same size, new content
    settle(project)
    output = run_list(project)

    assert "omega-event" in output and "alpha-event" not in output


def test_freshly_edited_config_is_not_cached(project: ProjectDir) -> None:
    project.config("app: shop\n")

    assert "yaml-imported" in run_list(project)
    assert "yaml-imported" in run_list(project)
    assert not (project.root / ".juncture/state/config.cache").exists()


def test_unreadable_cache_falls_back_to_parsing(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  alpha-event: {}\n")
    settle(project)
    cache = project.root / ".juncture/state/config.cache"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not marshal data")

    output = run_list(project)

    assert "alpha-event" in output and "yaml-imported" in output
