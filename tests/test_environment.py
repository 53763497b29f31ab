"""The environment contract: every variable, the prefix, context fields, Kamal compatibility."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from conftest import ProjectDir


def _env_of_hook(
    project: ProjectDir, tmp_path: Path, *args: str, event: str = "ev", **kwargs: object
) -> dict[str, str]:
    dump = tmp_path / "env"
    project.hook(event, "10-dump", f"#!/bin/sh\nenv -0 > {dump}\n")
    result = project.run("fire", event, *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)


def test_every_contract_variable_reaches_the_hook(project: ProjectDir, tmp_path: Path) -> None:
    project.config("app: shop\nevents:\n  ev: {revision: 3}\n")
    before = time.time()
    env = _env_of_hook(
        project, tmp_path, "--verb", "start", "--set", "project=shop", "--set", "version=1a2b3c4d5e"
    )
    user = (
        os.environ.get("USER")
        or os.environ.get("LOGNAME")
        or subprocess.check_output(["whoami"], text=True).strip()
    )
    assert env["JUNCTURE_EVENT"] == "ev"
    assert env["JUNCTURE_REVISION"] == "3"
    assert env["JUNCTURE_VERB"] == "start"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", env["JUNCTURE_RUN_ID"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", env["JUNCTURE_RECORDED_AT"])
    recorded = time.mktime(time.strptime(env["JUNCTURE_RECORDED_AT"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 2 <= recorded <= time.time() + 2
    assert env["JUNCTURE_PERFORMER"] == f"{user}@{os.uname().nodename}"
    assert env["JUNCTURE_APP"] == "shop"
    assert env["JUNCTURE_VERSION"] == "1a2b3c4d5e"
    assert env["JUNCTURE_STAGE"] == ""
    assert env["JUNCTURE_HOSTS"] == "localhost"
    assert env["JUNCTURE_HOST"] == "localhost"
    assert env["JUNCTURE_ROLES"] == ""
    assert env["JUNCTURE_DRY_RUN"] == "false"
    assert env["JUNCTURE_PROJECT"] == "shop"
    assert env["JUNCTURE_SERVICE_VERSION"] == "shop@1a2b3c4"


def test_run_id_differs_between_runs(project: ProjectDir, tmp_path: Path) -> None:
    first = _env_of_hook(project, tmp_path)["JUNCTURE_RUN_ID"]
    assert _env_of_hook(project, tmp_path)["JUNCTURE_RUN_ID"] != first


def test_caller_environment_passes_through(project: ProjectDir, tmp_path: Path) -> None:
    env = _env_of_hook(project, tmp_path, env={**os.environ, "OPERATOR_TOKEN_PATH": "/x/y"})
    assert env["OPERATOR_TOKEN_PATH"] == "/x/y"


def test_version_defaults_to_the_git_commit(project: ProjectDir, tmp_path: Path) -> None:
    git = ["git", "-C", str(project.root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "juncture.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
    assert _env_of_hook(project, tmp_path)["JUNCTURE_VERSION"] == head


def test_env_prefix_changes_every_name(project: ProjectDir, tmp_path: Path) -> None:
    project.config("env_prefix: MPD_HOOK_\n")
    env = _env_of_hook(project, tmp_path, "--set", "db_engine=postgres")
    assert env["MPD_HOOK_EVENT"] == "ev"
    assert env["MPD_HOOK_DB_ENGINE"] == "postgres"
    # JUNCTURE_HOOK_TOKEN is juncture's mark for finding the hook's processes, not part of the contract.
    assert not any(key.startswith("JUNCTURE_") for key in env if key != "JUNCTURE_HOOK_TOKEN")


def test_declared_field_default_is_given(project: ProjectDir, tmp_path: Path) -> None:
    project.config(
        "events:\n  ev:\n    fields:\n      runtime: {default: php}\n      project: {required: true}\n"
    )
    env = _env_of_hook(project, tmp_path, "--set", "project=shop")
    assert (env["JUNCTURE_RUNTIME"], env["JUNCTURE_PROJECT"]) == ("php", "shop")


def test_owned_variables_cannot_be_overridden_with_set(project: ProjectDir) -> None:
    result = project.run("fire", "ev", "--set", "event=other")
    assert result.returncode == 2
    assert "event is set by juncture" in result.stderr


def test_kamal_prefix_runs_a_kamal_hook_unchanged(project: ProjectDir) -> None:
    project.config("app: basecamp\nenv_prefix: KAMAL_\nhooks_path: .kamal/hooks\n")
    (project.root / ".kamal" / "hooks").mkdir(parents=True)
    # The post-deploy example of Kamal's hooks documentation, writing its message instead of posting it.
    project.hook(
        "post-deploy",
        None,
        """\
        #!/usr/bin/env bash
        MESSAGE="$KAMAL_PERFORMER deployed $KAMAL_SERVICE_VERSION to $KAMAL_DESTINATION at $KAMAL_RECORDED_AT"
        echo "$MESSAGE"
        echo "command=$KAMAL_COMMAND version=$KAMAL_VERSION hosts=$KAMAL_HOSTS service=$KAMAL_SERVICE"
        """,
        layer=".kamal/hooks",
    )
    result = project.run(
        "fire",
        "post-deploy",
        "-v",
        "--verb",
        "deploy",
        "--set",
        "version=150b24fe",
        "--set",
        "stage=production",
    )
    assert result.returncode == 0, result.stderr
    user = os.environ.get("USER") or subprocess.check_output(["whoami"], text=True).strip()
    lines = [
        line.removeprefix("[post-deploy] ") for line in result.stdout.splitlines() if line.startswith("[")
    ]
    assert re.fullmatch(
        rf"{re.escape(user)}@{re.escape(os.uname().nodename)} deployed basecamp@150b24f to production at "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        lines[0],
    )
    assert lines[1] == "command=deploy version=150b24fe hosts=localhost service=basecamp"


def test_dry_run_runs_nothing_and_prints_each_variable(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("ev", "10-touch", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    result = project.run("fire", "ev", "--dry-run", "--set", "project=shop")
    assert result.returncode == 0
    assert not (tmp_path / "ran").exists()
    assert "JUNCTURE_DRY_RUN=true" in result.stdout
    assert "JUNCTURE_PROJECT=shop" in result.stdout
    assert "1. ev/10-touch  .juncture/hooks/ev.d/10-touch" in result.stdout
