"""Fixtures: a throw-away project on disk and a way to run the real `juncture` command on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


class ProjectDir:
    """A project directory with helpers to write config and hooks and to run juncture in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def config(self, text: str) -> Path:
        path = self.root / "juncture.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    def hook(
        self, event: str, name: str | None, body: str, layer: str = ".juncture/hooks", mode: int = 0o755
    ) -> Path:
        """A drop-in `<layer>/<event>.d/<name>`, or the flat file `<layer>/<event>` when name is None.

        A ':' in the event name is a directory level: `deploy:updated` -> `deploy/updated.d/`.
        """
        on_disk = event.replace(":", "/")
        path = self.root / layer / (f"{on_disk}.d/{name}" if name is not None else on_disk)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body).lstrip())
        path.chmod(mode)
        return path

    def run(self, *args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "juncture", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[call-overload]
        )


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "juncture.yaml").write_text("app: shop\n")
    return ProjectDir(root)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def _no_inherited_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test run from inside a hook must not see the outer run's variables.
    for key in list(os.environ):
        if key.startswith(("JUNCTURE_", "KAMAL_")) and key != "JUNCTURE_DEBUG":
            monkeypatch.delenv(key)
