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
from typing import TYPE_CHECKING

from .config.deploy import Source
from .lock import LOCK_NAME, LockHeld, LockInfo
from .record import asdict, fields
from .runners.remote_script import quote
from .target import (
    PARTIAL,
    Revision,
    StepFailed,
    next_release_name,
    parse_revisions,
    release_key,
    source_excluder,
)

if TYPE_CHECKING:
    from .runners.ssh import SshPool

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
        partial = quote(name + PARTIAL)
        self._run(
            f'cd "$D/releases" && rm -rf {partial} && mkdir {partial} && tar -x -C {partial} && '
            f"mv {partial} {quote(name)}",
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
        # raises when the host is gone: the caller says the release was left there
        self._run(f"rm -rf {quote(self.release_path(name))}", f"removing release {name}")

    def record(self, action: str, release: str, **fields: str) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        words = " ".join(f"{key}={value}" for key, value in fields.items() if value)
        line = f"{at} {action} release={release} {words}"
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

    def lock(self, info: LockInfo, wait: float) -> None:
        """Create the lock file with noclobber (O_EXCL): whoever creates it holds it."""
        body = quote(json.dumps(asdict(info)))
        deadline = time.monotonic() + wait
        while True:
            out = self._run(
                f'mkdir -p "$D" || exit 1\n'
                f'if (set -C; printf "%s" {body} > "$D/{LOCK_NAME}") 2>/dev/null; then echo TAKEN; '
                f'else cat "$D/{LOCK_NAME}"; fi',
                "taking the deploy lock",
            )
            if out.strip() == "TAKEN":
                return
            if time.monotonic() >= deadline:
                try:
                    holder = LockInfo(**json.loads(out)).describe()
                except (ValueError, TypeError):
                    holder = "held (unreadable lock file)"
                raise LockHeld(f"stage {info.stage} is locked on {self.host}: {holder}")
            time.sleep(0.5)

    def holder(self) -> LockInfo | None:
        """Who holds the lock, None when unlocked; an unreadable lock still counts as held."""
        out = self._run(
            f'[ -e "$D/{LOCK_NAME}" ] || {{ echo UNLOCKED; exit 0; }}\ncat "$D/{LOCK_NAME}"',
            "reading the deploy lock",
        )
        if out.strip() == "UNLOCKED":
            return None
        try:
            data = json.loads(out)
            return LockInfo(**{key: data[key] for key in fields(LockInfo)})
        except (ValueError, KeyError, TypeError):
            return LockInfo("?", "?", "?", "", "unknown (unreadable lock file)", "?", 0, "?")

    def unlock(self, run_id: str | None) -> None:
        """Remove the lock if `run_id` holds it; None: whoever holds it (`lock release`). Raises when
        the host cannot be reached, so that a lock left behind is reported, not claimed released."""
        if run_id is None:
            script = f'rm -f "$D/{LOCK_NAME}"'
        else:
            script = f'grep -qF {quote(run_id)} "$D/{LOCK_NAME}" 2>/dev/null && rm -f "$D/{LOCK_NAME}"; true'
        self._run(script, "releasing the deploy lock")
