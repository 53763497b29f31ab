"""A deploy target on an SSH host: the same steps as `LocalTarget`, each one shell script over the run's
connection. The release is sent as a tar stream on standard input, built in `NAME.partial`, then renamed.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._util.record import asdict
from ..config.deploy import Source
from ..model.recorded import escape
from ..transports.shell import quote
from . import lock
from .local import (
    PARTIAL,
    Revision,
    StepFailed,
    next_release_name,
    parse_revisions,
    release_key,
    source_excluder,
)
from .lock import LOCK_NAME, LockError, LockHeld, LockInfo, Verdict

if TYPE_CHECKING:
    from ..transports.ssh.worker import SshPool

__all__ = ["RemoteTarget", "release_tar"]


def release_tar(source: Source, root: str, deploy_to: str) -> tuple[bytes, int]:
    """The release as an uncompressed tar (loopback and LAN links are faster than gzip), and its files."""
    buffer = io.BytesIO()
    files = 0
    if source.git is not None:
        import subprocess

        done = subprocess.run(["git", "-C", root, "archive", "--format=tar", source.git], capture_output=True)
        if done.returncode != 0:
            raise StepFailed(f"git archive {source.git}: {done.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            return done.stdout, sum(1 for member in tar if member.isreg() or member.issym())
    assert source.path is not None
    excluded = source_excluder(source.path, source.exclude, deploy_to)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, names in os.walk(source.path):
            for name in list(dirs):
                if excluded is not None and excluded(os.path.join(directory, name), name):
                    dirs.remove(name)
            for name in [*dirs, *names]:
                path = os.path.join(directory, name)
                if name in names and excluded is not None and excluded(path, name):
                    continue
                info = tar.gettarinfo(path, os.path.relpath(path, source.path))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                    files += 1
                elif info.issym() or info.isdir():
                    tar.addfile(info)
                    files += info.issym()
    return buffer.getvalue(), files


class RemoteTarget:
    def __init__(self, pool: SshPool, host: str, deploy_to: str) -> None:
        self.pool = pool
        self.host = host
        self.deploy_to = deploy_to
        self.releases_dir = posixpath.join(deploy_to, "releases")
        self.shared_dir = posixpath.join(deploy_to, "shared")
        self.current_link = posixpath.join(deploy_to, "current")
        self.revisions_log = posixpath.join(deploy_to, "revisions.log")

    def _run(self, script: str, what: str, data: bytes = b"", check: bool = True) -> str:
        code, out = self.pool.run(self.host, f"D={quote(self.deploy_to)}\n{script}\n", data)
        if check and code != 0:
            detail = out.strip().splitlines()[-1] if out.strip() else f"exit code {code}"
            raise StepFailed(f"{self.host}: {what}: {detail}")
        return out

    def release_path(self, name: str) -> str:
        return posixpath.join(self.releases_dir, name)

    # -- reading ------------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        out = self._run('ls -1A "$D/releases" 2>/dev/null; true', "listing releases")
        return [n for n in out.splitlines() if n and not n.startswith(".")]

    def releases(self) -> list[str]:
        return sorted((n for n in self._names() if not n.endswith(PARTIAL)), key=release_key)

    def partials(self) -> list[str]:
        return sorted(n for n in self._names() if n.endswith(PARTIAL))

    def current(self) -> str | None:
        out = self._run('readlink "$D/current" 2>/dev/null; true', "reading current").strip()
        return posixpath.basename(posixpath.normpath(out)) if out else None

    def revisions(self) -> list[Revision]:
        return parse_revisions(self._run('cat "$D/revisions.log" 2>/dev/null; true', "reading revisions"))

    def new_release_name(self) -> str:
        return next_release_name(self._names())

    # -- actions ------------------------------------------------------------------------------------

    def ensure_tree(self, shared_dirs: tuple[str, ...], shared_files: tuple[str, ...]) -> None:
        dirs = " ".join(quote(f"shared/{p}") for p in shared_dirs)
        parents = " ".join(quote(f"shared/{posixpath.dirname(p)}") for p in shared_files)
        checks = "".join(
            f'[ -f {quote("shared/" + p)} ] || echo "missing $D/shared/{p}"\n' for p in shared_files
        )
        out = self._run(
            f'mkdir -p "$D/releases" "$D/shared" || exit 1\ncd "$D" && mkdir -p {dirs} {parents} . || exit 1\n{checks}',
            f"preparing {self.deploy_to}",
        )
        missing = [line[len("missing ") :] for line in out.splitlines() if line.startswith("missing ")]
        if missing:
            raise StepFailed(
                f"{self.host}: shared file missing: {', '.join(missing)} (create it once on the host)"
            )

    def build(self, name: str, data: bytes) -> None:
        """Unpack into `NAME.partial`, then rename it. A failure (a full disk) removes the partial
        release and says tar's first "Cannot …" complaint, which names the system's reason (a short
        write, often first, does not), else its first."""
        partial = quote(name + PARTIAL)
        self._run(
            f'cd "$D/releases" && rm -rf {partial} && mkdir {partial} || exit 1\n'
            f"if ! e=$(tar -x -C {partial} 2>&1); then\n  rm -rf {partial}\n"
            '  printf "%s\\n" "$e" | grep -m 1 "Cannot " || printf "%s\\n" "$e" | head -n 1\n  exit 1\nfi\n'
            f"mv {partial} {quote(name)} || {{ rm -rf {partial}; exit 1; }}",
            f"building release {name}",
            data,
        )

    def link_shared(self, name: str, dirs: tuple[str, ...], files: tuple[str, ...]) -> None:
        lines = []
        for path in (*dirs, *files):
            link = posixpath.join(self.release_path(name), path)
            relative = posixpath.relpath(posixpath.join(self.shared_dir, path), posixpath.dirname(link))
            lines.append(
                f"rm -rf {quote(link)} && mkdir -p {quote(posixpath.dirname(link))} && "
                f"ln -s {quote(relative)} {quote(link)} || exit 1"
            )
        if lines:
            self._run("\n".join(lines), f"linking shared paths into {name}")

    def swap(self, name: str) -> None:
        """A new symlink renamed over `current` (rename(2) through `mv -T`): never a moment without one."""
        self._run(
            f'[ -d "$D/current" ] && [ ! -L "$D/current" ] && {{ echo "$D/current is a directory"; exit 1; }}\n'
            f'ln -sfn {quote("releases/" + name)} "$D/current.$$.tmp" && mv -Tf "$D/current.$$.tmp" "$D/current"',
            f"swapping current to {name}",
        )

    def remove(self, name: str) -> None:
        """Remove a release and what is left of its build (a build whose connection was cut leaves
        `NAME.partial`). Raises when the host is gone: the caller says the release was left there."""
        path = self.release_path(name)
        self._run(f"rm -rf {quote(path)} {quote(path + PARTIAL)}", f"removing release {name}")

    def record(self, action: str, release: str, **fields: str) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # escape: a value with a line break or a space would forge a line or a field (recorded.py)
        words = " ".join(f"{key}={escape(value)}" for key, value in fields.items() if value)
        line = f"{at} {action} release={escape(release)} {words}"
        self._run(f'printf "%s\\n" {quote(line)} >> "$D/revisions.log"', "writing revisions.log")

    def prune(self, keep: int, protect: set[str]) -> list[str]:
        names = self._names()
        releases = sorted((n for n in names if not n.endswith(PARTIAL)), key=release_key)
        doomed = [n for n in releases[: max(0, len(releases) - keep)] if n not in protect]
        doomed += [n for n in names if n.endswith(PARTIAL)]
        if doomed:
            words = " ".join(quote(n) for n in doomed)
            self._run(f'cd "$D/releases" && rm -rf {words}', "pruning releases")
        return doomed

    # -- the deploy lock (on the primary host) -------------------------------------------------------

    def lock(
        self,
        info: LockInfo,
        wait: float,
        waiting: Callable[[LockInfo], None] | None = None,
        took_over: Callable[[LockInfo, Verdict], None] | None = None,
    ) -> None:
        """Write the lock to a private file and hard-link it into place (`ln` fails if a lock exists):
        whoever links it holds it, and no one reads a half-written lock. A stale lock is taken over."""
        body = quote(json.dumps(asdict(info)))
        deadline = time.monotonic() + wait
        misses = 0  # tries that found neither a lock nor a way to take it: bounded
        while True:
            out = self._run(
                f'L="$D/{LOCK_NAME}"; T="$L.$$.tmp"\n'
                'e=$(mkdir -p "$D" 2>&1) || { echo "CANNOT create $e"; exit 0; }\n'
                f"{_staged(body)}"
                'if e=$(ln "$T" "$L" 2>&1); then rm -f "$T"; echo TAKEN; exit 0; fi\n'
                'rm -f "$T"\n[ -e "$L" ] || { echo "MISSED $e"; exit 0; }\n'
                'uname -n\ncat "$L" 2>/dev/null; true',
                "taking the deploy lock",
            )
            if out.strip() == "TAKEN":
                return
            self._cannot(out)
            node, _, raw = out.partition("\n")
            if node.startswith("MISSED ") or not raw.strip():
                misses += 1  # released between our `ln` and our look
                if misses > 5:
                    raise LockError(
                        f"{self.host}: cannot take the deploy lock: {node.removeprefix('MISSED ')}"
                    )
                continue
            holder = lock.parse(raw)
            verdict = self.check(holder, node.strip())
            if verdict.state == "stale":
                if self._take_over(body, raw):
                    if took_over is not None:
                        took_over(holder, verdict)
                    return
                misses += 1  # another taker came first, or the lock reads differently each time
                if misses > 5:
                    raise LockError(
                        f"{self.host}: cannot take over the stale deploy lock in {self.deploy_to}"
                    )
                continue
            if time.monotonic() >= deadline:
                raise LockHeld(lock.held_message(info.stage, f" on {self.host}:", holder, verdict, wait))
            if waiting is not None:
                waiting(holder)
                waiting = None
            time.sleep(0.5)

    def _cannot(self, out: str) -> None:
        """Raise the one-line reason why `$D` takes no lock, when a lock script said so (CANNOT, and
        the shell's or mkdir's error, whose last words are the system's reason)."""
        if not out.startswith("CANNOT "):
            return
        reason = out.strip().splitlines()[-1].rsplit(": ", 1)[-1]
        if out.startswith("CANNOT create "):
            raise LockError(f"{self.host}: cannot create {self.deploy_to}: {reason}")
        raise LockError(
            f"{self.host}: cannot take the deploy lock: {self.deploy_to} is not writable ({reason})"
        )

    def _take_over(self, body: str, raw: str) -> bool:
        """Replace the stale lock `raw` by ours unless it changed since it was judged: under flock(1) of
        `$D`, which other takers and `lock release` take too, and which ends with the script."""
        out = self._run(
            f"{_EXCLUSIVE}{_unchanged(raw)} || {{ echo CHANGED; exit 0; }}\n"
            f'T="$L.$$.tmp"\n{_staged(body)}rm -f "$L" && ln "$T" "$L" && echo TAKEN; rm -f "$T"',
            "taking over the stale deploy lock",
        )
        self._cannot(out)
        return out.strip() == "TAKEN"

    def read_lock(self) -> tuple[LockInfo | None, str, str]:
        """Who holds the lock (None when unlocked; an unreadable lock still counts as held), the lock
        file's text, and the host's name (`uname -n`, to check a holder that ran on the host)."""
        out = self._run(
            f'uname -n\n[ -e "$D/{LOCK_NAME}" ] || {{ echo UNLOCKED; exit 0; }}\ncat "$D/{LOCK_NAME}"',
            "reading the deploy lock",
        )
        node, _, raw = out.partition("\n")
        if raw.strip() == "UNLOCKED":
            return None, "", node.strip()
        return lock.parse(raw), raw, node.strip()

    def holder(self) -> LockInfo | None:
        return self.read_lock()[0]

    def check(self, holder: LockInfo, node: str) -> Verdict:
        """Whether the holder lives: checked on this machine when it ran here, on the host when it ran
        there (`node`: the host's name); else unknown."""
        if holder.host == os.uname().nodename or holder.host != node or holder.pid <= 0:
            return lock.check(holder)
        out = self._run(
            "cat /proc/sys/kernel/random/boot_id\nreadlink /proc/self/ns/pid || echo\n"
            f"sed 's/.*) //' /proc/{holder.pid}/stat 2>/dev/null | cut -d' ' -f1,20; true",
            "checking the deploy lock's holder",
        )
        boot, pidns, stat, *_ = [*out.split("\n"), "", ""]
        state = stat.split()
        start = int(state[1]) if len(state) == 2 and state[0] != "Z" and state[1].isdigit() else None
        return lock.judge(holder, boot.strip(), pidns.strip(), start)

    def unlock(self, run_id: str | None, raw: str = "") -> bool:
        """Remove the lock if `run_id` holds it; with `raw` (`lock release`), if it is still that lock
        file, under the takers' flock. Whether it was removed. Raises when the host cannot be reached, so
        that a lock left behind is reported, not claimed released."""
        if run_id is not None:
            script = f'L="$D/{LOCK_NAME}"\ngrep -qF {quote(run_id)} "$L" 2>/dev/null || exit 0\n'
        else:
            script = f"{_EXCLUSIVE}{_unchanged(raw)} || exit 0\n"
        out = self._run(f'{script}rm -f "$L" && echo REMOVED', "releasing the deploy lock")
        return out.strip() == "REMOVED"


# `$L` is the lock; these run under flock of `$D` (flock(1): util-linux or busybox) until the script ends.
_EXCLUSIVE = f'L="$D/{LOCK_NAME}"\nexec 9<"$D" && flock 9 || exit 1\n'


def _staged(body: str) -> str:
    """Write `body` to `$T`; when that fails (read-only, full, not allowed), say CANNOT and the error."""
    return f'e=$({{ printf \'%s\' {body} > "$T"; }} 2>&1) || {{ rm -f "$T"; echo "CANNOT $e"; exit 0; }}\n'


def _unchanged(raw: str) -> str:
    """A test that the lock file still reads `raw` (as `$(cat)` reads it: without trailing newlines)."""
    return f'[ "$(cat "$L" 2>/dev/null)" = {quote(raw.rstrip(chr(10)))} ]'
