"""The first secrets of a project, stored by many processes at once: one key, complete, for all of them.

The key file is made when the first secret is stored. Processes racing to make it must agree on one key
(no process fails because another made it first) and none may read it before it is complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ProjectDir
from juncture.state.outputs import Entry
from juncture.state.sqlite import Store

WRITERS = 12


def _key_checks(state: Path, sizes: set[int]) -> None:
    key_file = state / "secret.key"
    assert 0 not in sizes, f"the key file was seen empty (sizes seen: {sorted(sizes)})"
    assert sizes <= {45} and key_file.stat().st_size == 45  # base64 of 32 bytes, and a newline
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in state.iterdir() if "secret" in p.name] == ["secret.key"]  # no temporary left


def _opened(state: Path) -> dict[str, str | None]:
    with Store(str(state)) as store:
        return {item.key: item.value for item in store.items(open_secrets=True)}


def _reading_stdin(pid: int) -> bool:
    """True once `pid` is blocked in read(0, ...): `kv put --secret` waiting for its value."""
    with open(f"/proc/{pid}/syscall") as handle:
        return handle.read().startswith("0 0x0 ")


def _watch(path: Path, stop: threading.Event, sizes: set[int]) -> None:
    while not stop.is_set():
        try:
            sizes.add(path.stat().st_size)
        except FileNotFoundError:
            pass


def test_parallel_kv_put_secret_on_a_fresh_project(tmp_path: Path) -> None:
    """`juncture kv put --secret` x WRITERS, released together from their reads of stdin."""
    for round_ in range(2):
        root = tmp_path / f"proj{round_}"
        root.mkdir()
        (root / "juncture.yaml").write_text("app: shop\n")
        writers = [
            subprocess.Popen(
                [sys.executable, "-m", "juncture", "-C", str(root), "kv", "put", "--secret", f"pw{i}"],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(WRITERS)
        ]
        sizes: set[int] = set()
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(root / ".juncture" / "secret.key", stop, sizes))
        try:
            deadline = time.monotonic() + 30
            while not all(_reading_stdin(w.pid) for w in writers):
                assert time.monotonic() < deadline, "the writers never waited for their values"
                time.sleep(0.01)
            watcher.start()
            for i, writer in enumerate(writers):
                assert writer.stdin is not None
                writer.stdin.write(f"secret-{round_}-{i}\n")
                writer.stdin.flush()
            for writer in writers:
                assert writer.stdin is not None
                writer.stdin.close()
            for i, writer in enumerate(writers):
                assert writer.stderr is not None
                err = writer.stderr.read()
                assert writer.wait(timeout=60) == 0, f"writer {i}: exit {writer.returncode}: {err}"
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
            for writer in writers:
                writer.kill()
                writer.wait()
        _key_checks(root / ".juncture", sizes)
        got = ProjectDir(root).run("kv", "get", "--reveal", "pw0")
        assert (got.returncode, got.stdout) == (0, f"secret-{round_}-0\n"), got.stderr
        assert _opened(root / ".juncture") == {f"pw{i}": f"secret-{round_}-{i}" for i in range(WRITERS)}


def test_processes_released_at_once_make_one_key(tmp_path: Path) -> None:
    """The tight race: forked processes, each with its store open, all woken by one pipe's EOF, put their
    first secret within microseconds of each other (what `kv put --secret` does after reading stdin)."""
    for round_ in range(20):
        state = tmp_path / f"proj{round_}" / ".juncture"
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        pids = []
        for i in range(WRITERS):
            pid = os.fork()
            if pid == 0:  # the child: never returns into pytest
                code = 1
                try:
                    os.close(go_w)
                    with Store(str(state)) as store:
                        os.write(ready_w, b".")
                        os.read(go_r, 1)
                        store.put([Entry(None, f"pw{i}", f"v{round_}-{i}", True)], "app")
                    code = 0
                except BaseException as exc:
                    os.write(2, f"writer {i}: {type(exc).__name__}: {exc}\n".encode())
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(go_r)
        os.close(ready_w)
        for _ in range(WRITERS):
            assert os.read(ready_r, 1) == b"."
        os.close(ready_r)
        os.close(go_w)  # every writer's read returns now
        sizes: set[int] = set()
        codes: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(codes) < WRITERS:
            if time.monotonic() > deadline:
                for pid in set(pids) - codes.keys():
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                pytest.fail(f"round {round_}: writers still running after 60 s")
            try:
                sizes.add((state / "secret.key").stat().st_size)
            except FileNotFoundError:
                pass
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[pid] = os.waitstatus_to_exitcode(status)
        assert list(codes.values()) == [0] * WRITERS, f"round {round_}: a writer failed (its stderr above)"
        _key_checks(state, sizes)
        assert _opened(state) == {f"pw{i}": f"v{round_}-{i}" for i in range(WRITERS)}
