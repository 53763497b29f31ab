"""Command line: parse, call, render. Errors become one line on stderr and an exit code.

Exit codes: 0 success; 1 a hook failed and its event aborted (or `check` found errors);
2 usage or configuration error; 3 done on the reachable hosts, unreachable ones skipped
(`on_unreachable: skip`); 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from ..errors import JunctureError, UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["entry", "main"]

# command -> module with its `run(args)`, imported only when that command runs
_COMMANDS = {
    "init": "init",
    "fire": "fire",
    "list": "listing",
    "check": "check",
    "deploy": "deploy",
    "rollback": "deploy",
    "run": "task",
    "releases": "releases",
    "lock": "lock",
    "kv": "kv",
    "history": "history",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0 (float() also reads `nan` and `inf`)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="juncture", description="Run hooks at the junctures of a deployment lifecycle.")
    parser.add_argument(
        "-C", dest="directory", metavar="DIR", help="project directory (default: search upward)"
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: juncture.yaml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("init", help="create juncture.yaml and .juncture/hooks with sample hooks")

    fire = sub.add_parser("fire", help="run the hooks of an event")
    fire.add_argument("event")
    fire.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a context field")
    fire.add_argument("--verb", default="fire", help="the verb that fired the event (<PREFIX>VERB)")
    fire.add_argument("--dry-run", action="store_true", help="run nothing; print the plan and environment")
    fire.add_argument("--stage", help="fire on the stage's targets (the event's audience, tasks' selectors)")
    fire.add_argument("--concurrency", type=int, metavar="N", help="targets at work at once (default 64)")
    output = fire.add_mutually_exclusive_group()
    output.add_argument("-v", "--verbose", action="store_true", help="stream every output line live")
    output.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    output.add_argument("--json", action="store_true", help="one JSON object per line on stdout")

    listing = sub.add_parser("list", help="list the hooks each event would run, in order")
    listing.add_argument("event", nargs="?")
    listing.add_argument("-v", "--verbose", action="store_true", help="also list skipped files, and why")

    check = sub.add_parser("check", help="diagnose hooks and configuration before anything runs")
    check.add_argument("--json", action="store_true", help="findings as one JSON document")

    deploy = sub.add_parser("deploy", help="deploy a new release to a stage, with hooks at every phase")
    rollback = sub.add_parser("rollback", help="point a stage's `current` back at an earlier release")
    for verb in (deploy, rollback):
        verb.add_argument("stage")
        verb.add_argument("--skip-hooks", action="store_true", help="run the built-in steps only")
        verb.add_argument(
            "--dry-run", action="store_true", help="print the phases and their hooks; run nothing"
        )
        verb.add_argument(
            "--lock-wait",
            type=_seconds,
            default=0.0,
            metavar="SECONDS",
            help="wait this long for the deploy lock",
        )
        quiet = verb.add_mutually_exclusive_group()
        quiet.add_argument("-v", "--verbose", action="store_true", help="stream every hook's output live")
        quiet.add_argument("-q", "--quiet", action="store_true", help="print failures and the result only")
    deploy.add_argument("--version", help="the version being deployed (default: the git commit)")
    rollback.add_argument("--to", metavar="RELEASE", help="the release to go back to (default: the previous)")
    rollback.add_argument("--cleanup", action="store_true", help="delete the release rolled back from")

    task = sub.add_parser("run", help="run a task on its own, with its task hooks")
    task.add_argument("stage")
    task.add_argument("task")
    task.add_argument("-v", "--verbose", action="store_true", help="stream every output line live")

    releases = sub.add_parser("releases", help="list a stage's releases and which one is current")
    releases.add_argument("stage")

    locking = sub.add_parser("lock", help="show (exit 0 free, 1 held, 3 stale) or free a deploy lock")
    locking.add_argument("action", choices=["status", "release"])
    locking.add_argument("stage")
    locking.add_argument(
        "--force", action="store_true", help="release even a lock whose holder is alive or cannot be checked"
    )

    kv = sub.add_parser("kv", help="the KV store: variables and secrets for hooks and templates")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", parser_class=_Parser, required=True)
    get = kv_sub.add_parser("get", help="print a value (a secret only with --reveal)")
    get.add_argument("key")
    get.add_argument("--reveal", action="store_true", help="print a secret's value")
    put = kv_sub.add_parser("put", help="store a value; inside a hook: add it to the hook's outputs")
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value (a secret is read from standard input)")
    put.add_argument("--secret", action="store_true", help="encrypt it; the value comes from stdin")
    listed = kv_sub.add_parser("list", help="list keys and values (secrets as ***)")
    listed.add_argument("--json", action="store_true", help="one JSON document")
    remove = kv_sub.add_parser("rm", help="remove a key")
    remove.add_argument("key")
    for action in (get, put, listed, remove):
        action.add_argument(
            "--ns", metavar="NAMESPACE", help="app (default), stage:NAME, host:NAME or job:NAME"
        )

    history = sub.add_parser("history", help="past runs; one run's events, hooks and steps")
    history.add_argument("run_id", nargs="?", metavar="RUN_ID")
    history.add_argument("--stage", help="only the runs of this stage")
    history.add_argument("--json", action="store_true", help="one JSON document")
    history.add_argument("--html", metavar="FILE", help="write the run's timeline as one HTML page")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        from importlib import import_module

        command = import_module(f".{_COMMANDS[args.command]}", __name__)
        code: int = command.run(args)
        return code
    except JunctureError as exc:
        _say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if os.environ.get("JUNCTURE_DEBUG"):
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (set JUNCTURE_DEBUG=1 for a traceback)")
        return 70


def entry() -> NoReturn:
    """The `juncture` command: `main()`, then an exit that skips tearing the interpreter down.

    When `main` returns, everything durable is done (the store committed and closed, logs written,
    child processes reaped). What teardown would add is a full garbage collection of the run's objects
    and a close of each SSH socket from Python: about 100 ms after a run on 50 hosts, for nothing the
    kernel does not do at exit anyway.
    """
    _own_streams()
    _outlive_hangups()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Forgiving(io.FileIO):
    """fd 1 or 2 as juncture writes it. A failed write (the reader left: EPIPE; the terminal closed: EIO;
    a full disk) drops that write and every later one instead of raising: an exception out of a `print`
    would end a deploy half done, holding the lock. The run goes on to its end and exits with its own
    status; its logs and history keep every line. Writes are whole, so unbuffered (PYTHONUNBUFFERED)
    output loses nothing, and a stream that another process sharing it made non-blocking is waited on."""

    dropping = False

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view) and not self.dropping:
            try:
                written: int | None = super().write(view[done:])
            except OSError:
                self.dropping = True
                break
            if written is None:  # EAGAIN
                import select

                select.select([], [self.fileno()], [])
            else:
                done += written
        return len(view)


def _outlive_hangups() -> None:
    """A closed terminal is a broken output stream like any other (`_Forgiving`): the run goes on to its
    end instead of dying half done, holding the lock. A handler, not SIG_IGN: exec resets it, so hooks
    start with the default. Left alone when SIGHUP is ignored already (nohup): hooks inherit that."""
    import signal

    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _hangup)


def _hangup(_signum: int, _frame: object) -> None:
    pass


def _own_streams() -> None:
    """stdout and stderr through `_Forgiving`, with the encoding and buffering Python chose for them."""
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        # fd 0, 1 or 2 closed at start (`>&-`): the next file opened (the store) would take it, and
        # output meant for the terminal would land there. /dev/null holds each closed one.
        while (fd := os.open(os.devnull, os.O_RDWR)) <= 2:
            pass
        os.close(fd)
        if sys.stdin is None:
            sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's stdin, never closed
    sys.stdout = _forgiving(1, sys.stdout)
    sys.stderr = _forgiving(2, sys.stderr)


def _forgiving(fd: int, old: TextIO | None) -> TextIO:
    raw = _Forgiving(fd, "w", closefd=False)
    if not isinstance(old, io.TextIOWrapper):  # closed at start: /dev/null now
        return io.TextIOWrapper(io.BufferedWriter(raw), "utf-8", "backslashreplace")
    buffer = io.BufferedWriter(raw) if isinstance(old.buffer, io.BufferedWriter) else raw
    return io.TextIOWrapper(
        buffer, old.encoding, old.errors, line_buffering=old.line_buffering, write_through=old.write_through
    )


def _say(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"juncture: error: {message}\n")
