"""Copying a release tree and removing an old one, with every CPU the machine offers.

Per file, almost all the cost is in the kernel (create, copy_file_range, futimens: about 28 µs a file on
tmpfs, far more on a busy ext4), so Python-level trimming wins little. Threads do not help either:
every short syscall drops and retakes the GIL, and two threads spend their time handing it over (on
tmpfs they were 1.2-2.7x slower than one). The parallelism therefore comes from processes: this
process walks the tree (directories, symlinks, the exclusion callback, file names only), then forks
one helper per spare CPU, and all of them take per-directory batches of files from one pipe of job
numbers, so the split balances itself even when a few files are large. On 2 CPUs a 2,000-file copy
takes 0.4-0.6x the time of one process, for the same total CPU.

Forking is safe only in a single-threaded process, so it is done only then (a local deploy is), and
only for trees big enough to repay the ~2 ms a fork costs. SIGINT and SIGTERM are blocked around
fork() so that no KeyboardInterrupt lands before the helper is recorded; helpers ignore them and
leave with os._exit. Whatever ends the parent's share (an OSError, Ctrl-C), the helpers are killed and
reaped before the caller sees the exception, so nothing writes into a tree the caller then removes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

__all__ = ["copy_tree", "remove_tree"]

PARALLEL_MIN_FILES = 256  # below this a fork costs more than it saves (measured break-even: 150-200)
MAX_PROCESSES = 4
BATCH = 64  # files per batch, at most; a batch never spans two directories
MAX_JOBS = 1024  # job numbers are 4 bytes: 4 KiB, the smallest pipe buffer, so writing them never blocks

_RD = os.O_RDONLY | os.O_CLOEXEC
_WR = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

Batch = tuple[str, str, list[str]]  # source directory, destination directory, file names
Work = Callable[[str, str, list[str]], None]


def copy_tree(
    source: str, destination: str, excluded: Callable[[str, str], bool] | None, suffix: str | None = None
) -> tuple[int, list[str]]:
    """Copy a tree as `cp -a` does for a deploy (modes, times, symlinks as links; no sockets or FIFOs).

    Returns the number of files and symlinks, and the destination paths of the regular files whose
    name ends with `suffix` (the templates to render), so nobody walks the new tree again.
    """
    batches: list[Batch] = []
    dirs: list[tuple[str, str]] = []
    files = _walk(source, destination, excluded, batches, dirs)
    _run(batches, files, _copy_batch)
    for src, dst in dirs:  # deepest first: creating a file changes its directory's times
        st = os.stat(src)
        os.chmod(dst, st.st_mode & 0o7777)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    found = []
    if suffix is not None:
        found = [os.path.join(dst, n) for _, dst, names in batches for n in names if n.endswith(suffix)]
    return files, found


def remove_tree(path: str) -> None:
    """`rm -rf path`: the files by batches in parallel, then the directories, deepest first."""
    batches: list[Batch] = []
    dirs: list[str] = []
    files = _list_for_removal(path, batches, dirs)
    _run(batches, files, _unlink_batch)
    for directory in dirs:
        os.rmdir(directory)


def _walk(
    source: str,
    destination: str,
    excluded: Callable[[str, str], bool] | None,
    batches: list[Batch],
    dirs: list[tuple[str, str]],
) -> int:
    """Make the directories and symlinks; list the files to copy (the entry's type is enough: no stat)."""
    os.mkdir(destination, 0o700)
    files = 0
    names: list[str] = []
    with os.scandir(source) as entries:
        for entry in entries:
            if excluded is not None and excluded(entry.path, entry.name):
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), os.path.join(destination, entry.name))
                files += 1
            elif entry.is_dir():
                files += _walk(entry.path, os.path.join(destination, entry.name), excluded, batches, dirs)
            elif entry.is_file():
                names.append(entry.name)
            # sockets and FIFOs (a dev server's leftovers) have no content to deploy
    _batch_up(source, destination, names, batches)
    dirs.append((source, destination))
    return files + len(names)


def _list_for_removal(path: str, batches: list[Batch], dirs: list[str]) -> int:
    files = 0
    names: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                files += _list_for_removal(entry.path, batches, dirs)
            else:
                names.append(entry.name)
    _batch_up(path, path, names, batches)
    dirs.append(path)
    return files + len(names)


def _batch_up(source: str, destination: str, names: list[str], batches: list[Batch]) -> None:
    batches.extend((source, destination, names[i : i + BATCH]) for i in range(0, len(names), BATCH))


def _copy_batch(source: str, destination: str, names: list[str]) -> None:
    """Copy the regular files `names` of one directory, opening both directories once."""
    sfd = os.open(source, _DIR)
    try:
        dfd = os.open(destination, _DIR)
        try:
            for name in names:
                try:
                    src = os.open(name, _RD, dir_fd=sfd)
                except OSError as exc:
                    exc.filename = os.path.join(source, name)  # the caller shows it: the whole path
                    raise
                try:
                    try:
                        dst = os.open(name, _WR, 0o600, dir_fd=dfd)
                    except OSError as exc:
                        exc.filename = os.path.join(destination, name)
                        raise
                    try:
                        _copy_file(src, dst)
                    finally:
                        os.close(dst)
                finally:
                    os.close(src)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_file(src: int, dst: int) -> None:
    st = os.fstat(src)
    left = st.st_size
    try:
        while left > 0:
            done = os.copy_file_range(src, dst, left)
            if done == 0:
                break
            left -= done
    except OSError:  # another file system, or no copy_file_range: copy through the kernel
        while left > 0:
            done = os.sendfile(dst, src, None, left)
            if done == 0:
                break
            left -= done
    os.fchmod(dst, st.st_mode & 0o7777)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _unlink_batch(directory: str, _: str, names: list[str]) -> None:
    dfd = os.open(directory, _DIR)
    try:
        for name in names:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                exc.filename = os.path.join(directory, name)
                raise
    finally:
        os.close(dfd)


# -- helper processes ---------------------------------------------------------------------------------


def _run(batches: list[Batch], files: int, work: Work) -> None:
    helpers = _helpers(files)
    if not helpers:
        for batch in batches:
            work(*batch)
        return
    per_job = -(-len(batches) // MAX_JOBS)
    jobs = [batches[i : i + per_job] for i in range(0, len(batches), per_job)]
    queue_r, queue_w = os.pipe()
    try:
        os.write(queue_w, b"".join(i.to_bytes(4, "little") for i in range(len(jobs))))
    finally:
        os.close(queue_w)  # readers see EOF once the queue is empty
    children: list[tuple[int, int]] = []  # (pid, read end of its error report), not yet reaped
    try:
        _fork(helpers, jobs, work, queue_r, children)
        _take_jobs(jobs, work, queue_r)
        error: OSError | None = None
        while children:
            pid, report_r = children[0]
            report = _read_all(report_r)  # EOF: the helper is exiting
            # A Ctrl-C right after waitpid() must not leave a reaped pid in `children` for _kill().
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                _, status = os.waitpid(pid, 0)
                children.pop(0)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(report_r)
            error = error or _helper_error(report, status)
        if error is not None:
            raise error
    finally:
        _kill(children)
        os.close(queue_r)


def _helpers(files: int) -> int:
    """How many processes to fork: none unless the tree is big, there are CPUs to spare, and fork is
    safe (no other thread in this process)."""
    if files < PARALLEL_MIN_FILES:
        return 0
    if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
        return 0
    cpus = len(os.sched_getaffinity(0))
    return max(0, min(cpus, MAX_PROCESSES, files // (PARALLEL_MIN_FILES // 2)) - 1)


def _fork(
    count: int, jobs: list[list[Batch]], work: Work, queue_r: int, children: list[tuple[int, int]]
) -> None:
    blocked = {signal.SIGINT, signal.SIGTERM}
    parent = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        for _ in range(count):
            report_r, report_w = os.pipe()
            try:
                pid = os.fork()
            except OSError:  # no more processes: the ones there are do the work
                os.close(report_r)
                os.close(report_w)
                return
            if pid == 0:
                _helper(jobs, work, queue_r, report_r, report_w, mask, parent)  # never returns
            os.close(report_w)
            children.append((pid, report_r))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _helper(
    jobs: list[list[Batch]],
    work: Work,
    queue_r: int,
    report_r: int,
    report_w: int,
    mask: set[int | signal.Signals],
    parent: int,
) -> None:
    code = 3
    try:
        # The parent decides about Ctrl-C and SIGTERM (and kills us when it gives up); no Python handler
        # of the parent's (one writing to a wake-up fd, say) may run in here.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(report_r)
        try:
            _take_jobs(jobs, work, queue_r, parent)
            code = 0
        except OSError as exc:
            while os.read(queue_r, 4096):  # empty the queue so that the others stop soon
                pass
            fields = (str(exc.errno or ""), exc.strerror or str(exc), os.fsdecode(exc.filename or ""))
            os.write(report_w, "\0".join(fields).encode("utf-8", "surrogateescape"))
            code = 1
    except BaseException:
        code = 2
    finally:
        os._exit(code)


def _take_jobs(jobs: list[list[Batch]], work: Work, queue_r: int, parent: int | None = None) -> None:
    while True:
        if parent is not None and os.getppid() != parent:
            os._exit(4)  # the parent died without reaping us: stop, one job late at most
        data = os.read(queue_r, 4)  # a 4-byte pipe read is atomic between readers
        if not data:
            return
        for batch in jobs[int.from_bytes(data, "little")]:
            work(*batch)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _helper_error(report: bytes, status: int) -> OSError | None:
    if report:
        number, message, filename = report.decode("utf-8", "surrogateescape").split("\0")
        if not number:
            return OSError(message)
        return OSError(int(number), message, filename) if filename else OSError(int(number), message)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return OSError(f"a helper process {how}")


def _kill(children: list[tuple[int, int]]) -> None:
    """Kill and reap the helpers still running; a Ctrl-C meanwhile is raised once they are gone."""
    interrupted: BaseException | None = None
    for pid, _ in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, report_r in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
        os.close(report_r)
    children.clear()
    if interrupted is not None:
        raise interrupted
