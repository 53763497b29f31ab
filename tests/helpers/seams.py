"""Projects for end-to-end tests that go through the `juncture` command only: juncture.yaml written as
JSON (which is YAML), a stage whose hosts are names for the session's loopback sshd, a git work tree,
and the files hooks write to say what they saw."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servers import SshServer

    from conftest import ProjectDir

__all__ = ["commit_all", "env_lines", "git_init", "host", "host_stage", "ok", "write_config"]


def host(name: str, *roles: str, **extra: Any) -> dict[str, Any]:
    """A stage host named `name` that is the loopback sshd (its address is 127.0.0.1)."""
    return {"name": name, "address": "127.0.0.1", "roles": list(roles), **extra}


def host_stage(
    project: ProjectDir, server: SshServer, hosts: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A stage on `hosts` of `server`, each host deploying to `<project's parent>/deployed/<host name>`
    (`deploy_to` is a template rendered per host)."""
    return {
        "deploy_to": str(project.root.parent / "deployed" / "{{ host.name }}"),
        "hosts": hosts,
        "ssh": server.ssh_options(connect_timeout=5),
        **extra,
    }


def write_config(project: ProjectDir, body: dict[str, Any]) -> None:
    project.config(json.dumps(body, indent=1) + "\n")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "-c",
            "user.name=Seam Test",
            "-c",
            "user.email=seams@example.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def git_init(root: Path) -> None:
    _git(root, "init", "-q")


def commit_all(root: Path, message: str = "commit") -> str:
    """Commit everything in the work tree at `root`; the new HEAD's full id."""
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "HEAD")


def env_lines(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (as `env` or `echo "K=$V"` write them) as a dict; later lines win."""
    return dict(line.partition("=")[::2] for line in path.read_text().splitlines() if "=" in line)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done
