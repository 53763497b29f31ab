"""Run a plan: start hooks in order (N at a time), enforce timeouts, apply the failure mode.

One `poll` loop watches every running hook's output pipe and exit pidfd, plus a wake-up pipe for
SIGINT/SIGTERM. No thread and no asyncio: starting a hook costs about what run-parts' fork/exec costs.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .errors import JunctureError
from .model.outcome import FAILED, HookResult, RunResult
from .model.target import Target
from .plan.plan import Plan
from .sources.rundirs import Hook
from .transports.local import LocalProcess
from .transports.reaper import TOKEN as HOOK_TOKEN
from .transports.reaper import new_token
from .transports.shell import OUTPUTS

if TYPE_CHECKING:
    from .state.masking import Stream
    from .state.session import Session

__all__ = ["TAIL_BYTES", "Process", "Reporter", "Starter", "run_plan", "run_plans"]

TAIL_BYTES = 64 * 1024  # output kept in memory per hook; the rest is only in the log file
_MAX_LINE = 64 * 1024  # a longer line without a newline is passed on in pieces
_LINGER = 0.2  # seconds to keep reading after a hook exits, for its last output
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Reporter(Protocol):
    wants_lines: bool

    def run_started(self, plan: Plan) -> None: ...
    def hook_started(self, result: HookResult) -> None: ...
    def hook_output(self, result: HookResult, lines: list[bytes]) -> None: ...
    def hook_finished(self, result: HookResult) -> None: ...
    def run_finished(self, result: RunResult) -> None: ...


class Process(Protocol):
    """A started hook: LocalProcess, or a hook on a host or in a container."""

    out_fd: int
    exit_fd: int

    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def reap(self) -> int: ...
    def close_output(self) -> None: ...


class Starter(Protocol):
    """Starts hooks on targets other than this machine (see `connections.Connections`)."""

    def start(
        self, target: Target, hook: Hook, env: dict[str, str], cwd: str | None, grace: float
    ) -> Process: ...


class _Lane:
    """One plan's hooks on one target: its queue, what runs, and its result."""

    def __init__(self, plan: Plan, starter: Starter | None) -> None:
        self.plan = plan
        self.target = plan.target
        self.starter = starter
        local = plan.target.kind == "local"
        # A remote hook gets the contract and what the config passes, never the operator's environment.
        self.env = {**os.environ, **plan.env} if local else dict(plan.env)
        self.cwd = None if local and _is_current_dir(plan.cwd) else plan.cwd
        self.pending = deque(enumerate(plan.hooks))
        self.running: list[_Job] = []
        self.result = RunResult(plan)
        self.stop_starting = False
        self.started = False
        self.finished = False
        self.began = 0.0
        self.failed_scopes: set[int] = set()  # task invocations that failed (see Command.scope)

    def may_start(self, hook: Hook) -> bool:
        """Up to `parallel` hooks at once; a task's commands run alone, in order (they depend on each other)."""
        if not self.running:
            return True
        if hook.command is not None or any(job.result.hook.command is not None for job in self.running):
            return False
        return len(self.running) < self.plan.event.parallel

    @property
    def done(self) -> bool:
        return not self.running and (self.stop_starting or not self.pending)


class _Job:
    def __init__(
        self, lane: _Lane, result: HookResult, process: Process, started: float, timeout: float
    ) -> None:
        self.lane = lane
        self.result = result
        self.process = process
        self.started = started
        self.deadline = started + timeout
        self.kill_at: float | None = None  # set once SIGTERM was sent
        self.killed = False
        self.linger_until: float | None = None  # set once the main process exited
        self.exited = False
        self.partial = b""
        self.tail = bytearray()
        self.log_fd = -1
        self.script: str | None = None  # an inline script's private file, removed when the hook ends
        self.outputs: str | None = None  # the hook's outputs file, read when it ends
        self.masker: Stream | None = None  # masks its output once the run knows a secret


class _Runner:
    def __init__(
        self,
        plans: list[Plan],
        reporter: Reporter,
        starter: Starter | None,
        concurrency: int,
        session: Session | None = None,
    ) -> None:
        self.lanes = [_Lane(plan, starter) for plan in plans]
        self.session = session
        self.reporter = reporter
        self.concurrency = concurrency  # lanes (targets) at work at once
        self.poller = select.poll()
        self.by_fd: dict[int, _Job] = {}
        self.running: list[_Job] = []
        self.interrupted = False
        self.interrupts = 0
        self.devnull = -1

    # -- starting and finishing hooks --------------------------------------------------------------

    def start(self, lane: _Lane, hook: Hook, index: int) -> None:
        event = lane.plan.event
        command = hook.command
        timeout = command.timeout if command is not None and command.timeout else event.timeout
        result = HookResult(hook=hook, index=index, timeout=timeout, target=lane.target.name)
        lane.result.hooks.append(result)
        if command is not None and any(scope in lane.failed_scopes for scope, _ in command.scope):
            result.status = "skipped"
            self.reporter.hook_finished(result)
            return
        self.reporter.hook_started(result)
        now = time.monotonic()
        script = None
        process: Process
        outputs = None
        try:
            env, cwd = lane.env, lane.cwd
            if self.session is not None:
                extra, outputs = self.session.hook_env(lane.target, event)
                env = {**env, **extra}
            if command is not None:
                env = {**env, **dict(command.env)} if command.env else env
                cwd = command.cwd if command.cwd is not None else cwd
            if env is lane.env:
                env = dict(env)
            env[HOOK_TOKEN] = new_token()  # last: whatever the config sets, the hook is found by it
            if lane.starter is not None and lane.target.kind != "local":
                process = lane.starter.start(lane.target, hook, env, cwd, event.grace)
            else:
                argv = [hook.path]
                if command is not None:
                    argv = list(command.argv)
                    if command.cwd is not None and not os.path.isdir(command.cwd):
                        raise FileNotFoundError(errno.ENOENT, f"directory {command.cwd} does not exist")
                    if command.script is not None:
                        script = _write_script(command.script, command.suffix)
                        argv.append(script)
                stdin = None if event.stdin == "inherit" else self.devnull
                process = LocalProcess(argv, env, cwd, stdin, event.grace)
        except (OSError, JunctureError) as exc:  # JunctureError: a secret the event asks for is missing
            if script is not None:
                os.unlink(script)
            result.status = "error"
            result.error = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
                result.error += " (no #! line?)"
            self.finished(lane, result)
            return
        job = _Job(lane, result, process, now, timeout)
        job.script = script
        job.outputs = outputs
        self.running.append(job)
        lane.running.append(job)
        self.by_fd[process.out_fd] = job
        self.by_fd[process.exit_fd] = job
        self.poller.register(process.out_fd, select.POLLIN)
        self.poller.register(process.exit_fd, select.POLLIN)

    def finish(self, job: _Job, now: float) -> None:
        process = job.process
        if process.out_fd >= 0:
            self.close_output(job)
        result = job.result
        if self.session is not None and job.outputs is not None:
            event = job.lane.plan.event.name
            if job.outputs == OUTPUTS:  # read back from the host by its runner
                text = (getattr(process, "outputs", None) or b"").decode("utf-8", "surrogateescape")
                note = self.session.collect_text(result, event, text)
            else:
                note = self.session.collect(result, event, job.outputs)
            if note:
                self.output(job, note.encode())
                self.flush_output(job)
        result.duration = now - job.started
        result.tail = bytes(job.tail)
        if self.session is not None and self.session.masks:  # with what the outputs file taught too
            result.tail = self.session.masks.mask(result.tail)
        if job.log_fd >= 0:
            os.close(job.log_fd)
        if job.script is not None:
            os.unlink(job.script)
        self.running.remove(job)
        job.lane.running.remove(job)
        self.finished(job.lane, result)

    def finished(self, lane: _Lane, result: HookResult) -> None:
        if result.status in FAILED and result.hook.command is not None:
            # The failed task and the tasks around it fail, up to the first continue_on_error one.
            for scope, tolerant in reversed(result.hook.command.scope):
                lane.failed_scopes.add(scope)
                if tolerant:
                    result.tolerated = True
                    break
        if result.status in FAILED and not result.tolerated and lane.plan.event.failure == "abort":
            lane.stop_starting = True
            if lane.result.aborted_by is None:
                lane.result.aborted_by = result
            if result.status == "error" and result.error.startswith("connection to"):
                self.host_lost(lane, result)
        if result.status == "interrupted":
            lane.result.interrupted.append(result)
        if self.session is not None:
            self.session.hook_done(lane.plan, result)
        self.reporter.hook_finished(result)

    def flush_output(self, job: _Job) -> None:
        if job.masker is not None:
            data = job.masker.flush()
            if data:
                self.pass_on(job, data)
        if job.partial:
            self.reporter.hook_output(job.result, [job.partial])
            job.partial = b""

    def close_output(self, job: _Job) -> None:
        self.flush_output(job)
        fd = job.process.out_fd
        self.poller.unregister(fd)
        del self.by_fd[fd]
        job.process.close_output()

    # -- events from the poll loop ----------------------------------------------------------------

    def readable(self, fd: int, now: float) -> None:
        job = self.by_fd[fd]
        if fd == job.process.exit_fd:
            self.exited(job, now)
            return
        data = os.read(fd, 65536)
        if not data:
            self.close_output(job)
            return
        self.output(job, data)

    def exited(self, job: _Job, now: float) -> None:
        process = job.process
        self.poller.unregister(process.exit_fd)
        del self.by_fd[process.exit_fd]
        result = job.result
        if job.kill_at is not None or job.lane.plan.event.leftovers == "kill":
            # Timed out or interrupted (or the event wants no leftovers): whatever the hook started dies
            # with it (the zombie still holds the process group id, so the group cannot have been reused).
            process.kill()
        code = process.reap()
        job.exited = True
        job.linger_until = now + _LINGER
        error = getattr(process, "error", "")  # a remote hook whose connection was lost
        if code < 0:
            result.signal = -code
        elif not error:
            result.exit_code = code
        if result.status == "running":
            result.status = "error" if error else "ok" if code == 0 else "failed"
            result.error = error

    def output(self, job: _Job, data: bytes) -> None:
        session = self.session
        if session is not None:
            if job.outputs not in (None, OUTPUTS):
                session.watch(job.outputs)
            if session.masks:  # without secrets, output passes on untouched
                if job.masker is None:
                    job.masker = session.masks.stream()
                data = job.masker.feed(data)  # holds back only what may begin a secret
                if not data:
                    return
        self.pass_on(job, data)

    def pass_on(self, job: _Job, data: bytes) -> None:
        result = job.result
        result.output_bytes += len(data)
        if job.log_fd < 0:
            job.log_fd = self.open_log(job)
        if job.log_fd >= 0:
            os.write(job.log_fd, data)
        tail = job.tail
        tail += data
        if len(tail) > TAIL_BYTES:
            del tail[: len(tail) - TAIL_BYTES]
        if self.reporter.wants_lines:
            lines = (job.partial + data).split(b"\n")
            job.partial = lines.pop()
            if len(job.partial) > _MAX_LINE:
                lines.append(job.partial)
                job.partial = b""
            if lines:
                self.reporter.hook_output(result, lines)

    def open_log(self, job: _Job) -> int:
        result = job.result
        log_dir = job.lane.plan.log_dir
        try:
            os.makedirs(os.path.dirname(log_dir), mode=0o700, exist_ok=True)
            os.makedirs(log_dir, mode=0o700, exist_ok=True)
            path = os.path.join(log_dir, f"{result.index + 1:03d}-{result.hook.name}.log")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError:
            return -2  # no log (read-only project?): keep the tail only, and don't retry every chunk
        result.log_path = path
        return fd

    # -- timeouts and interrupts ------------------------------------------------------------------

    def check_deadlines(self, now: float) -> None:
        for job in list(self.running):
            if job.exited:
                if job.process.out_fd < 0 or (job.linger_until is not None and now >= job.linger_until):
                    self.finish(job, now)
            elif job.kill_at is None and now >= job.deadline:
                job.result.status = "timeout"
                self.terminate(job, now)
            elif job.kill_at is not None and not job.killed and now >= job.kill_at:
                job.process.kill()
                job.killed = True

    def terminate(self, job: _Job, now: float) -> None:
        job.process.terminate()
        job.kill_at = now + job.lane.plan.event.grace

    def host_lost(self, lost: _Lane, cause: HookResult) -> None:
        """The run is aborted by a host that went away: the other targets' hooks are not waited for
        until their own timeouts, they are interrupted now (TERM, grace, KILL), saying why."""
        host = lost.target.host
        why = f"host {host.name if host is not None else lost.target.name} lost"
        now = time.monotonic()
        for lane in self.lanes:
            if lane is lost or lane.finished:
                continue
            lane.stop_starting = True
            if lane.result.aborted_by is None:
                lane.result.aborted_by = cause  # the cause, on another target: see outcome.root_failure
            for job in lane.running:
                if not job.exited and job.kill_at is None:
                    job.result.status = "interrupted"
                    job.result.error = why
                    self.terminate(job, now)

    def interrupt(self, now: float) -> None:
        self.interrupts += 1
        self.interrupted = True
        for lane in self.lanes:
            lane.stop_starting = True
            lane.result.status = "interrupted"
        for job in self.running:
            if job.exited:
                continue
            if job.result.status == "running":
                job.result.status = "interrupted"
            if self.interrupts > 1:
                job.process.kill()  # a second Ctrl-C does not wait for the grace period
                job.killed = True
            elif job.kill_at is None:
                self.terminate(job, now)

    def next_wake(self, now: float) -> int:
        times = []
        for job in self.running:
            if job.exited:
                times.append(job.linger_until or now)
            elif not job.killed:
                times.append(job.deadline if job.kill_at is None else job.kill_at)
        if not times:
            return -1
        return max(0, int((min(times) - now) * 1000) + 1)

    # -- the loop ---------------------------------------------------------------------------------

    def start_lanes(self) -> None:
        """Start what may start: lanes in order, at most `concurrency` of them at work."""
        busy = 0
        for lane in self.lanes:
            if busy >= self.concurrency:
                return
            if lane.finished:
                continue
            if not lane.started:
                lane.started = True
                lane.began = time.monotonic()
                self.reporter.run_started(lane.plan)
            while lane.pending and not lane.stop_starting and lane.may_start(lane.pending[0][1]):
                index, hook = lane.pending.popleft()
                self.start(lane, hook, index)
            if lane.done:
                self.lane_finished(lane)
            else:
                busy += 1

    def lane_finished(self, lane: _Lane) -> None:
        lane.finished = True
        result = lane.result
        if result.status != "interrupted" and result.aborted_by is not None:
            result.status = "failed"
        result.duration = time.monotonic() - lane.began
        self.reporter.run_finished(result)

    def run(self) -> list[RunResult]:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(wake_r, select.POLLIN)
        caught: list[int] = []
        restore = _catch_signals(wake_w, caught)
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                self.start_lanes()
                if not self.running:
                    break
                now = time.monotonic()
                for fd, _ in self.poller.poll(self.next_wake(now)):
                    now = time.monotonic()
                    if fd == wake_r:
                        _drain(wake_r)
                    elif fd in self.by_fd:
                        self.readable(fd, now)
                while caught:
                    caught.pop()
                    self.interrupt(time.monotonic())
                self.check_deadlines(time.monotonic())
        finally:
            restore()
            for fd in (wake_r, wake_w, self.devnull):
                os.close(fd)
            for job in self.running:  # only on an unexpected error: leave nothing behind
                job.process.kill()
        for lane in self.lanes:
            if not lane.started and self.interrupted:
                lane.result.status = "interrupted"
        if self.session is not None:
            self.session.flush()
        return [lane.result for lane in self.lanes]


def _is_current_dir(path: str) -> bool:
    try:
        return os.path.samefile(path, os.curdir)
    except OSError:
        return False


def _write_script(text: str, suffix: str) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="juncture-", suffix=suffix)  # 0600, private
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _catch_signals(wake_fd: int, caught: list[int]) -> Callable[[], None]:
    """Turn SIGINT/SIGTERM into entries of `caught` and a byte on `wake_fd` (main thread only).

    A SIGINT ignored when juncture started (Python then leaves it ignored: `juncture deploy &` from a
    script) stays ignored during hooks too, as it is during built-in steps; SIGTERM always stops a run."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: object) -> None:
        caught.append(signum)

    signals = (signal.SIGTERM,) if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else _SIGNALS
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    previous_wake = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)

    def restore() -> None:
        signal.set_wakeup_fd(previous_wake)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run_plan(plan: Plan, reporter: Reporter, session: Session | None = None) -> RunResult:
    """Execute `plan` on this machine and report as it goes. Never raises for a failing hook."""
    return _Runner([plan], reporter, None, 1, session).run()[0]


def run_plans(
    plans: list[Plan],
    reporter: Reporter,
    starter: Starter | None,
    concurrency: int,
    session: Session | None = None,
) -> list[RunResult]:
    """Execute plans side by side, each on its target (one lane per plan), at most `concurrency` lanes at
    work at once. Within a lane, the plan's order, parallelism and failure mode apply as in `run_plan`."""
    return _Runner(plans, reporter, starter, concurrency, session).run()
