"""`juncture kv`: the project's KV store, its namespaces, secrets at rest, and the database's failures."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import ProjectDir

SECRET = "hunter2-correct-horse-battery"


def _db(project: ProjectDir) -> Path:
    return project.root / ".juncture" / "state" / "juncture.db"


def _key_file(project: ProjectDir) -> Path:
    return project.root / ".juncture" / "secret.key"


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _put_secret(project: ProjectDir, key: str = "TOKEN", value: str = SECRET, *args: str) -> None:
    _ok(project.run("kv", "put", "--secret", key, *args, input=value + "\n"))


def _listed(project: ProjectDir, *args: str) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(_ok(project.run("kv", "list", "--json", *args)).stdout)
    return listed


def test_put_get_list_rm_round_trip_and_missing_key_exits_1(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "DB_URL", "postgres://db/shop"))
    _ok(project.run("kv", "put", "REGION", "eu"))
    _ok(project.run("kv", "put", "REGION", "us"))  # a second put replaces the value
    assert _ok(project.run("kv", "get", "DB_URL")).stdout == "postgres://db/shop\n"
    assert _ok(project.run("kv", "list")).stdout.splitlines() == [
        "app  DB_URL=postgres://db/shop",
        "app  REGION=us",
    ]
    _ok(project.run("kv", "rm", "DB_URL"))
    gone = project.run("kv", "get", "DB_URL")
    assert gone.returncode == 1
    assert gone.stdout == ""
    again = project.run("kv", "rm", "DB_URL")  # nothing left to remove
    assert again.returncode == 1
    assert "DB_URL" in again.stderr


def test_namespaces_are_kept_apart(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "URL", "app-url"))
    _ok(project.run("kv", "put", "URL", "prod-url", "--ns", "stage:production"))
    _ok(project.run("kv", "put", "URL", "web-url", "--ns", "host:web-1"))
    _ok(project.run("kv", "put", "URL", "job-url", "--ns", "job:web"))
    assert _ok(project.run("kv", "get", "URL", "--ns", "stage:production")).stdout == "prod-url\n"
    assert _ok(project.run("kv", "list", "--ns", "stage:production")).stdout.splitlines() == [
        "stage:production  URL=prod-url"
    ]
    _ok(project.run("kv", "rm", "URL", "--ns", "host:web-1"))  # removes that namespace's key only
    assert {(e["ns"], e["value"]) for e in _listed(project)} == {
        ("app", "app-url"),
        ("stage:production", "prod-url"),
        ("job:web", "job-url"),
    }


def test_list_json_gives_ns_key_secret_and_value_with_secrets_hidden(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "REGION", "eu"))
    _ok(project.run("kv", "put", "REPLICAS", "3", "--ns", "stage:production"))
    _put_secret(project)
    assert _listed(project) == [
        {"ns": "app", "key": "REGION", "secret": False, "value": "eu"},
        {"ns": "app", "key": "TOKEN", "secret": True, "value": "***"},
        {"ns": "stage:production", "key": "REPLICAS", "secret": False, "value": "3"},
    ]
    assert _listed(project, "--ns", "stage:production") == [
        {"ns": "stage:production", "key": "REPLICAS", "secret": False, "value": "3"}
    ]


def test_secret_from_stdin_shows_stars_unless_revealed(project: ProjectDir) -> None:
    _put_secret(project)
    assert _ok(project.run("kv", "get", "TOKEN")).stdout == "***\n"
    assert _ok(project.run("kv", "get", "TOKEN", "--reveal")).stdout == SECRET + "\n"
    listed = _ok(project.run("kv", "list")).stdout
    assert listed.splitlines() == ["app  TOKEN=***"]
    assert SECRET not in listed


def test_database_and_its_wal_hold_no_plaintext_of_a_secret(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "PLAIN", "visible-plain-value"))
    # An open connection keeps the WAL from being checkpointed and removed when juncture exits, so
    # the secret's fresh write is still in the -wal file when it is read below.
    watcher = sqlite3.connect(_db(project))
    try:
        watcher.execute("SELECT COUNT(*) FROM kv").fetchone()
        _put_secret(project)
        wal = Path(f"{_db(project)}-wal")
        assert wal.exists()
        data = _db(project).read_bytes() + wal.read_bytes()
    finally:
        watcher.close()
    assert b"visible-plain-value" in data  # the check reads where the values are
    assert SECRET.encode() not in data
    assert base64.b64encode(SECRET.encode()) not in data
    assert _ok(project.run("kv", "get", "TOKEN", "--reveal")).stdout == SECRET + "\n"


def test_first_secret_creates_the_key_file_0600_beside_a_0600_database(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "PLAIN", "x"))
    assert not _key_file(project).exists()  # no key until there is something to seal
    _put_secret(project)
    assert _key_file(project).stat().st_mode & 0o777 == 0o600
    assert _db(project).stat().st_mode & 0o777 == 0o600
    assert len(base64.urlsafe_b64decode(_key_file(project).read_text().strip())) == 32


def test_key_file_readable_by_others_is_refused_naming_it(project: ProjectDir) -> None:
    _put_secret(project)
    _key_file(project).chmod(0o644)
    for args in (("kv", "get", "TOKEN", "--reveal"), ("fire", "ev")):  # a run opens them to mask them
        result = project.run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert str(_key_file(project)) in result.stderr
        assert "chmod 600" in result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_wrong_or_malformed_secret_key_in_the_environment_does_not_open_the_secret(
    project: ProjectDir,
) -> None:
    _put_secret(project)
    other = base64.urlsafe_b64encode(os.urandom(32)).decode()
    result = project.run("kv", "get", "TOKEN", "--reveal", env={**os.environ, "JUNCTURE_SECRET_KEY": other})
    assert result.returncode == 2
    assert "does not open" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    result = project.run("kv", "get", "TOKEN", "--reveal", env={**os.environ, "JUNCTURE_SECRET_KEY": "short"})
    assert result.returncode == 2
    assert "$JUNCTURE_SECRET_KEY: not a juncture secret key" in result.stderr


def test_secret_key_from_the_environment_is_used_instead_of_a_file(project: ProjectDir) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {**os.environ, "JUNCTURE_SECRET_KEY": key}
    _ok(project.run("kv", "put", "--secret", "TOKEN", input=SECRET, env=env))
    assert not _key_file(project).exists()
    assert _ok(project.run("kv", "get", "TOKEN", "--reveal", env=env)).stdout == SECRET + "\n"


def test_secret_without_any_key_names_the_missing_key(project: ProjectDir) -> None:
    _put_secret(project)
    _key_file(project).unlink()
    result = project.run("kv", "get", "TOKEN", "--reveal")
    assert result.returncode == 2
    assert str(_key_file(project)) in result.stderr
    assert "JUNCTURE_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_value_on_the_command_line_is_refused(project: ProjectDir) -> None:
    result = project.run("kv", "put", "--secret", "TOKEN", SECRET)
    assert result.returncode == 2
    assert "a secret is read from standard input, never from the command line" in result.stderr
    assert _listed(project) == []


def test_unknown_namespace_is_refused(project: ProjectDir) -> None:
    for args in (
        ("put", "K", "V", "--ns", "global"),
        ("get", "K", "--ns", "stage"),
        ("list", "--ns", "stage:"),
    ):
        result = project.run("kv", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "namespace" in result.stderr
    assert _listed(project) == []


def test_corrupted_database_exits_2_in_one_line_and_keeps_its_bytes(project: ProjectDir) -> None:
    _ok(project.run("kv", "put", "A", "1"))
    garbage = b"this is not a database, just garbage bytes\n" * 200
    _db(project).write_bytes(garbage)
    for args in (("kv", "list"), ("kv", "put", "B", "2"), ("fire", "ev")):
        result = project.run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert f"{_db(project)}: " in lines[0]
        assert ": not a juncture database (file is not a database). Nothing was changed; " in lines[0]
        assert "Traceback" not in result.stderr
        assert _db(project).read_bytes() == garbage, args


def test_eight_writers_at_once_all_succeed_and_every_key_is_stored(project: ProjectDir) -> None:
    # No database yet: the eight race to create it as well as to write.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "juncture", "-C", str(project.root), "kv", "put", f"K{i}", f"v{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = [(p.wait(timeout=60), p.communicate()) for p in procs]
    assert [code for code, _ in outcomes] == [0] * 8, outcomes
    assert {e["key"] for e in _listed(project)} == {f"K{i}" for i in range(8)}
