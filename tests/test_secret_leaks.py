"""Secrets stay hidden however a hook's output is cut into chunks, on every target (this machine, an SSH
host, a Podman container) and on every surface: the terminal (a failed hook's output), `-v`, `--json`,
the log files, `history RUN`, `history RUN --json` and the `--html` timeline.

The hook prints a secret of one line and one of several lines (from the KV store, given to it by the
event's `secrets:`), whole, split across writes with pauses between, line by line with other text between,
and at the end of lines longer than the engine's 64 KiB line limit, cut there by a pause.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from helpers.surfaces import assert_hidden, read_logs, secret_lines, surfaces
from test_remote import STAGE, configure, host

from conftest import ProjectDir

if TYPE_CHECKING:
    from servers import Podman, SshServer

ONE = secrets.token_hex(10)
PEM = "\n".join(secrets.token_hex(12) for _ in range(4))
# Halves of each line too: a secret cut in two by a chunk boundary must not show in pieces either.
HIDDEN = secret_lines(ONE, PEM) + [
    part for line in secret_lines(ONE, PEM) if "\n" not in line for part in (line[:10], line[-10:])
]

COMMON = """\
#!/bin/sh
ONE="$JUNCTURE_SECRET_ONE"
PEM="$JUNCTURE_SECRET_PEM"
half() { printf '%s' "$1" | head -c "$2"; }
rest() { printf '%s' "$1" | tail -c "+$(($2 + 1))"; }
pad() { head -c "$1" /dev/zero | tr '\\0' "$2"; }
"""
# One hook per way of printing, each failing (the event goes on): a leak names the hook's log.
HOOKS = {
    "10-whole": 'echo "whole one: $ONE"\nprintf \'whole pem:\\n%s\\n\' "$PEM"\n',
    "20-split": (
        "printf 'split one: '; half \"$ONE\" 5; sleep 0.25; rest \"$ONE\" 5; echo ' end'\n"
        'printf \'split pem: \'; half "$PEM" 30; sleep 0.25; rest "$PEM" 30; echo\n'
    ),
    "30-lines": 'printf \'%s\\n\' "$PEM" | while IFS= read -r line; do echo "pem line: $line"; echo between; done\n',
    "40-long": (  # lines over the 64 KiB line limit, ending in a secret cut by a pause
        'pad 65530 x; half "$ONE" 9; sleep 0.25; rest "$ONE" 9; echo\n'
        'pad 65500 y; half "$PEM" 50; sleep 0.25; rest "$PEM" 50; echo\n'
        "echo long done\n"
    ),
}
EVENT = {"secrets": ["ONE", "PEM"], "failure": "continue", "timeout": 30}

Fire = Callable[..., subprocess.Popen[str]]


def _store_secrets(project: ProjectDir) -> None:
    for key, value in (("ONE", ONE), ("PEM", PEM)):
        done = project.run("kv", "put", "--secret", key, input=value + "\n")
        assert done.returncode == 0, done.stderr


def _starter(project: ProjectDir, *args: str, env: dict[str, str] | None = None) -> Fire:
    def start(*mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "juncture", "-C", str(project.root), "fire", "leak", *args, *mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    return start


@pytest.fixture
def local(project: ProjectDir) -> Fire:
    project.config(json.dumps({"app": "shop", "events": {"leak": EVENT}}) + "\n")
    return _starter(project)


@pytest.fixture
def ssh_host(project: ProjectDir, sshd: SshServer) -> Fire:
    configure(project, sshd, [host("h1")], {"leak": {"audience": "hosts", **EVENT}})
    return _starter(project, "--stage", STAGE)


@pytest.fixture
def container(project: ProjectDir, podman: Podman) -> Iterator[Fire]:
    name = f"leak-{secrets.token_hex(3)}"
    podman.run(name)
    body = {
        "app": "shop",
        "events": {"leak": {"audience": "container:box", **EVENT}},
        "stages": {
            "boxes": {
                "deploy_to": str(project.root.parent / "d"),
                "containers": [{"name": name, "kind": "box"}],
            }
        },
    }
    project.config(json.dumps(body) + "\n")
    try:
        yield _starter(project, "--stage", "boxes", env=podman.environ())
    finally:
        podman.remove(name)


@pytest.mark.parametrize("target", ["local", "ssh_host", "container"])
def test_secrets_printed_in_any_chunking_show_on_no_surface(
    project: ProjectDir, target: str, request: pytest.FixtureRequest
) -> None:
    start: Fire = request.getfixturevalue(target)
    _store_secrets(project)
    for name, body in HOOKS.items():
        project.hook("leak", name, COMMON + body + "exit 1\n")
    started = {mode or "default": start(*([mode] if mode else [])) for mode in ("", "-v", "--json")}
    printed = {}
    for mode, proc in started.items():
        out, err = proc.communicate(timeout=60)
        printed[mode] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode in (0, 1), (mode, out[-2000:], err)  # 4 hooks failed, the event went on
    found = surfaces(project, printed)
    assert_hidden(found, HIDDEN)
    # The output did reach every surface, masked: the search above was not of empty places.
    verbose = printed["-v"].stdout.splitlines()
    for shown in ("whole one: ***", "split one: *** end", "split pem: ***", "pem line: ***", "long done"):
        assert f"    {shown}\n" in printed["default"].stdout, shown  # the failed hooks' output
        assert any(line.endswith(f"] {shown}") for line in verbose), shown
    lines = [json.loads(line) for line in printed["--json"].stdout.splitlines()]
    shown_lines = [e["line"] for e in lines if e["type"] == "hook-output"]
    assert {"whole one: ***", "whole pem:", "***", "split one: *** end", "pem line: ***"} <= set(shown_lines)
    assert "x" * 65530 + "***" in read_logs(project)
    assert "y" * 65500 + "***" in read_logs(project)
    histories = [text for where, text in found.items() if where.endswith("--json") and "history" in where]
    assert len(histories) == 3
    assert all("split one: *** end" in text for text in histories)


@pytest.mark.parametrize("target", ["local", "ssh_host"])
def test_a_malformed_outputs_file_hides_the_secrets_in_it_and_its_error_line(
    project: ProjectDir, target: str, request: pytest.FixtureRequest
) -> None:
    """Its line 2 is a stored secret (quoted by the error), its line 1 the hook's own secret, which the
    hook prints too: the error line shows neither, and neither does the failed hook's output or history
    (on a host the file, so the hook's own secret, is known only once the hook ended)."""
    start: Fire = request.getfixturevalue(target)
    _store_secrets(project)
    own = secrets.token_hex(10)
    project.hook(
        "leak",
        "10-outputs",
        f'#!/bin/sh\nprintf "secret OWN={own}\\n%s\\n" "$JUNCTURE_SECRET_ONE" >> "$JUNCTURE_OUTPUT"\necho "own: {own}"\n',
    )
    proc = start()
    out, err = proc.communicate(timeout=60)
    assert "outputs file line 2: expected KEY=VALUE or KEY<<DELIMITER, got '***': nothing stored" in out
    assert "    own: ***\n" in out  # the failed hook's output
    found = surfaces(project, {"default": subprocess.CompletedProcess(proc.args, proc.returncode, out, err)})
    assert_hidden(found, [ONE])
    assert_hidden({where: text for where, text in found.items() if "log" not in where}, [own])
    if target == "local":  # here the outputs file is read before the output is passed on
        assert_hidden(found, [own])
