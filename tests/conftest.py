"""Fixtures: a throw-away project on disk and a way to run the real `juncture` command on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from servers import Podman, SshServer


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


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique `sleep` duration (`300.NNNNNNNNN`) that names this test's processes; whatever still
    carries it is killed after the test."""
    import secrets

    from helpers.processes import kill_marked

    value = f"300.{secrets.randbelow(10**9):09d}"
    yield value
    kill_marked(value)


@pytest.fixture(autouse=True)
def _no_inherited_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test run from inside a hook must not see the outer run's variables.
    for key in list(os.environ):
        if key.startswith(("JUNCTURE_", "KAMAL_")) and key != "JUNCTURE_DEBUG":
            monkeypatch.delenv(key)


def _unavailable(what: str) -> NoReturn:
    """A real server this test needs is missing: skip on a developer's machine, fail in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} missing in CI (scripts/test installs it)")
    pytest.skip(f"{what} not installed (scripts/test installs it)")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, to fill up (mounting needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        _unavailable(f"a tmpfs mount ({made.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH sshd on 127.0.0.1 for the whole session (servers.start_sshd with its defaults)."""
    import servers  # here, not at the top: only sessions that use a real server pay for it

    if servers.sshd_binary() is None:
        _unavailable("sshd (Debian package openssh-server)")
    server = servers.start_sshd(str(tmp_path_factory.mktemp("sshd")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Podman with private storage and the busybox image built, for the whole session; reset at the end."""
    import servers

    missing = servers.podman_missing()
    if missing:
        _unavailable(", ".join(missing))
    engine = servers.start_podman(str(tmp_path_factory.mktemp("podman")))
    try:
        yield engine
    finally:
        engine.reset()
