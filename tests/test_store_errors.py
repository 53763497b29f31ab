"""The store under `.juncture/state` on a full disk, a read-only mount, a directory the user cannot
write, and a file that is not a juncture database: each is reported as what it is, in one line naming
the path (exit 2), only the last is called "not a juncture database", and nothing is lost."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from helpers.locks import read_only_dir

from conftest import ProjectDir, _unavailable

SECRET = "s3cret-value-of-the-store"
# Every kind of command that opens the store: a write, reads, a run (history and masking), history.
COMMANDS = (
    ("kv", "put", "B", "2"),
    ("kv", "get", "A"),
    ("kv", "list"),
    ("fire", "ev"),
    ("history",),
)
Runner = Callable[..., subprocess.CompletedProcess[str]]
DISCARD_WORDS = ("move it aside", "corrupt", "damaged", "not a juncture database", "start afresh")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _populated(project: ProjectDir) -> None:
    """A store holding a value, a secret and one run of history."""
    project.hook("ev", "10-say", "#!/bin/sh\necho fired\n")
    _ok(project.run("kv", "put", "A", "1"))
    _ok(project.run("kv", "put", "--secret", "PW", input=SECRET + "\n"))
    _ok(project.run("fire", "ev"))


def _intact(project: ProjectDir) -> None:
    """The value, the secret and the run are all there, and the refused writes left nothing."""
    assert _ok(project.run("kv", "get", "A")).stdout == "1\n"
    assert _ok(project.run("kv", "get", "--reveal", "PW")).stdout == SECRET + "\n"
    assert project.run("kv", "get", "B").returncode == 1
    assert project.run("kv", "get", "BIG").returncode == 1
    runs = _ok(project.run("history")).stdout.splitlines()
    assert len(runs) == 1 and "  fire  -  ev  " in runs[0] and "  ok  " in runs[0], runs


def _one_line(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    """The command's single stderr line (exit 2), which must hold every one of `parts`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _refused_as(project: ProjectDir, where: Path, what: str, runner: Runner | None = None) -> None:
    """Every command of COMMANDS fails in one line: `where: what`, saying the store is intact."""
    runner = runner or project.run
    for args in COMMANDS:
        line = _one_line(runner(*args), f"{where}: {what}", "nothing in the store was changed or lost")
        assert not any(word in line.lower() for word in DISCARD_WORDS), line


# -- a full disk ----------------------------------------------------------------------------------


def _fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of `directory`, leaving about `leave` bytes free."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(filler, "wb", buffering=0) as handle:
        try:
            handle.write(b"\0" * max(free - leave, 0))
            while not leave:
                handle.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass
    return filler


def _state_on(project: ProjectDir, mount: Path) -> Path:
    """Move the project's `.juncture/state` to `mount` (a symlink in its place)."""
    state = project.root / ".juncture" / "state"
    shutil.copytree(state, mount / "state")
    shutil.rmtree(state)
    state.symlink_to(mount / "state")
    return state


def test_full_disk_is_reported_as_full_and_the_store_survives(project: ProjectDir, small_fs: Path) -> None:
    _populated(project)
    state = _state_on(project, small_fs)
    filler = _fill(small_fs)
    _refused_as(project, state, "no space left on the file system")
    filler.unlink()
    _intact(project)


def test_disk_filling_up_during_a_write_is_reported_as_full(project: ProjectDir, small_fs: Path) -> None:
    """The store opens, and the disk fills up while a transaction is written (SQLITE_FULL)."""
    _populated(project)
    state = _state_on(project, small_fs)
    filler = _fill(small_fs, leave=600 * 1024)
    big = project.run("kv", "put", "--secret", "BIG", input="x" * (1024 * 1024) + "\n")
    line = _one_line(big, f"{state}: no space left on the file system", "nothing in the store was changed")
    assert not any(word in line.lower() for word in DISCARD_WORDS), line
    filler.unlink()
    _intact(project)


# -- a read-only mount ----------------------------------------------------------------------------


def test_read_only_file_system_is_reported_as_read_only(project: ProjectDir, tmp_path: Path) -> None:
    _populated(project)
    copy = ProjectDir(tmp_path / "ro")
    shutil.copytree(project.root, copy.root, symlinks=True)
    with read_only_dir(copy.root):
        _refused_as(copy, copy.root / ".juncture" / "state", "read-only file system")
    _intact(copy)


# -- a directory the user cannot write ------------------------------------------------------------


def _python_for_nobody() -> list[str]:
    """An interpreter `nobody` may run, importing this juncture: ours, or the system's of the same
    version with our sources and packages on its path (ours may live under root's home)."""
    paths = [str(Path(__file__).resolve().parents[1] / "src"), *(p for p in sys.path if "site-packages" in p)]
    env = ["env", f"PYTHONPATH={os.pathsep.join(paths)}"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        command = ["runuser", "-u", "nobody", "--", *env, python]
        probe = subprocess.run([*command, "-c", "import juncture.cli, sqlite3"], capture_output=True)
        if probe.returncode == 0:
            return command
    _unavailable(f"a {version} that user nobody can run (runuser, and {sys.executable} is not reachable)")


def test_directory_the_user_cannot_write_is_reported_as_permission_denied(project: ProjectDir) -> None:
    _populated(project)
    python = _python_for_nobody()
    shared = Path(tempfile.mkdtemp(prefix="juncture-nobody-"))  # /tmp: nobody can reach it
    try:
        shared.chmod(0o755)
        copy = ProjectDir(shared / "proj")
        shutil.copytree(project.root, copy.root, symlinks=True)
        for path in [copy.root, *copy.root.rglob("*")]:  # readable by all, writable by root only
            if path.name != "secret.key":
                path.chmod(0o755 if path.is_dir() else 0o644)

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*python, "-m", "juncture", "-C", str(copy.root), *args], capture_output=True, text=True
            )

        _refused_as(copy, copy.root / ".juncture" / "state", "permission denied: user nobody", as_nobody)
        _intact(copy)
    finally:
        shutil.rmtree(shared)


# -- not a juncture database ----------------------------------------------------------------------


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_garbage_file_is_not_a_juncture_database_and_is_left_as_it_is(project: ProjectDir) -> None:
    _populated(project)
    state = project.root / ".juncture" / "state"
    db = state / "juncture.db"
    db.write_bytes(os.urandom(64 * 1024))
    before = _digest(state)
    for args in COMMANDS:
        _one_line(project.run(*args), f"{db}: not a juncture database (file is not a database)")
    assert _digest(state) == before  # not a byte written, no -wal or -shm beside it


def test_sqlite_database_of_another_program_is_not_ours_and_is_left_as_it_is(project: ProjectDir) -> None:
    state = project.root / ".juncture" / "state"
    state.mkdir(parents=True)
    db = state / "juncture.db"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('CREATE TABLE kv (name TEXT, data BLOB)'); c.commit()",
            str(db),
        ],
        check=True,
    )
    before = _digest(state)
    for args in COMMANDS:
        _one_line(project.run(*args), f"{db}: not a juncture database (its table kv is not juncture's)")
    assert _digest(state) == before  # no tables of ours added, no WAL switched on
