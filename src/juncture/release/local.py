"""A deploy target's release tree, on this machine:

    deploy_to/
      releases/<name>/        one directory per release (`<name>.partial` while it is being built)
      shared/                 directories and files linked into every release
      current -> releases/<name>
      revisions.log           one line per deploy and rollback
      deploy.lock             while a deploy or rollback runs

The pipeline calls only these methods, so a remote target can stand in for this one.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import time
from collections.abc import Callable

from .._util.record import record
from ..config.deploy import Source
from ..errors import JunctureError
from ..model.recorded import escape
from .copytree import copy_tree, remove_tree

__all__ = ["PARTIAL", "LocalTarget", "Revision", "StepFailed", "release_key"]

PARTIAL = ".partial"


def release_key(name: str) -> tuple[str, int]:
    """Order of release names by time: `20261121103000` < `….2` < `….10` < `20261121103001`."""
    base, _, suffix = name.partition(".")
    return base, int(suffix) if suffix.isdigit() else 0


def next_release_name(names: list[str]) -> str:
    base = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    taken = [release_key(n.removesuffix(PARTIAL))[1] for n in names if n.split(".")[0] == base]
    return f"{base}.{max(taken) + 1}" if taken else base


def parse_revisions(text: str) -> list[Revision]:
    found = []
    for line in text.splitlines():
        at, _, rest = line.partition(" ")
        action, _, rest = rest.partition(" ")
        fields = dict(item.partition("=")[::2] for item in rest.split(" ") if "=" in item)
        if "release" in fields:
            found.append(Revision(at, action, fields["release"], fields))
    return found


class StepFailed(JunctureError):
    """A built-in action of a phase failed; the message says what and where."""

    exit_code = 1


@record
class Revision:
    """One line of revisions.log."""

    at: str
    action: str  # deployed | rolled-back
    release: str
    fields: dict[str, str]


class LocalTarget:
    def __init__(self, deploy_to: str) -> None:
        self.deploy_to = deploy_to
        self.releases_dir = os.path.join(deploy_to, "releases")
        self.shared_dir = os.path.join(deploy_to, "shared")
        self.current_link = os.path.join(deploy_to, "current")
        self.revisions_log = os.path.join(deploy_to, "revisions.log")
        self.host = "localhost"

    def release_path(self, name: str) -> str:
        return os.path.join(self.releases_dir, name)

    # -- reading ------------------------------------------------------------------------------------

    def releases(self) -> list[str]:
        """Complete releases, oldest first (names are timestamps)."""
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            return []
        return sorted(
            (n for n in names if not n.endswith(PARTIAL) and not n.startswith(".")), key=release_key
        )

    def partials(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.releases_dir) if n.endswith(PARTIAL))
        except FileNotFoundError:
            return []

    def current(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except (FileNotFoundError, OSError):
            return None
        return os.path.basename(os.path.normpath(target))

    def revisions(self) -> list[Revision]:
        try:
            with open(self.revisions_log) as handle:
                return parse_revisions(handle.read())
        except FileNotFoundError:
            return []

    def new_release_name(self) -> str:
        """A UTC timestamp; a later release within the same second gets a suffix above every
        existing one, so it sorts last even after pruning removed the base name."""
        return next_release_name(os.listdir(self.releases_dir) if os.path.isdir(self.releases_dir) else [])

    # -- actions ----------------------------------------------------------------------------------

    def ensure_tree(self, shared_dirs: tuple[str, ...], shared_files: tuple[str, ...]) -> None:
        for directory in (self.releases_dir, self.shared_dir):
            _makedirs(directory)
        for path in shared_dirs:
            _makedirs(os.path.join(self.shared_dir, path))
        missing = [p for p in shared_files if not os.path.isfile(os.path.join(self.shared_dir, p))]
        for path in shared_files:
            _makedirs(os.path.dirname(os.path.join(self.shared_dir, path)))
        if missing:
            where = ", ".join(os.path.join(self.shared_dir, p) for p in missing)
            raise StepFailed(f"shared file missing: {where} (create it once on the target)")

    def build(
        self,
        name: str,
        source: Source,
        root: str,
        prepare: Callable[[str, list[str]], object] | None = None,
        suffix: str | None = None,
    ) -> int:
        """Copy or export the source into `releases/<name>.partial`, `prepare` it (given the paths of
        the files that end with `suffix`: templates), then rename it into place. Returns the number
        of files."""
        final = self.release_path(name)
        partial = final + PARTIAL
        try:
            if source.git is not None:
                _git_export(root, source.git, partial)
                files, found = 0, []
                for directory, _, names in os.walk(partial):
                    files += len(names)
                    found += [os.path.join(directory, n) for n in names if suffix and n.endswith(suffix)]
            else:
                assert source.path is not None
                if not os.path.isdir(source.path):
                    raise StepFailed(f"source directory {source.path} does not exist")
                # deploy_to may lie inside the source (the default source is the whole project)
                excluded = source_excluder(source.path, source.exclude, self.deploy_to)
                files, found = copy_tree(source.path, partial, excluded, suffix)
            if prepare is not None:
                prepare(partial, found)
            if os.path.lexists(final):
                raise StepFailed(f"release {final} already exists")
            os.rename(partial, final)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise StepFailed(f"building release {final}: {_os_message(exc)}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # Ctrl-C, or the checks above
            raise
        return files

    def link_shared(self, name: str, dirs: tuple[str, ...], files: tuple[str, ...]) -> None:
        release = self.release_path(name)
        for path in (*dirs, *files):
            link = os.path.join(release, path)
            try:
                if os.path.lexists(link):
                    if os.path.isdir(link) and not os.path.islink(link):
                        shutil.rmtree(link)
                    else:
                        os.unlink(link)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                # relative, like `current`: the tree keeps working when deploy_to is moved or mounted elsewhere
                os.symlink(os.path.relpath(os.path.join(self.shared_dir, path), os.path.dirname(link)), link)
            except OSError as exc:
                raise StepFailed(f"linking shared {path} into {release}: {_os_message(exc)}") from None

    def swap(self, name: str) -> None:
        """Point `current` at releases/<name>: a new symlink renamed over the old, so there is always one."""
        staged = f"{self.current_link}.{os.getpid()}.tmp"
        try:
            if os.path.lexists(staged):
                os.unlink(staged)
            os.symlink(os.path.join("releases", name), staged)
            if os.path.isdir(self.current_link) and not os.path.islink(self.current_link):
                raise StepFailed(f"{self.current_link} is a directory, not a symlink: move it away first")
            os.rename(staged, self.current_link)
        except OSError as exc:
            raise StepFailed(f"swapping {self.current_link}: {_os_message(exc)}") from None
        finally:
            if os.path.lexists(staged):
                os.unlink(staged)

    def remove(self, name: str) -> None:
        path = self.release_path(name)
        try:
            remove_tree(path)
        except OSError:  # what can go, goes: pruning is best effort
            shutil.rmtree(path, ignore_errors=True)

    def record(self, action: str, release: str, **fields: str) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # escape: a value with a line break or a space would forge a line or a field (recorded.py)
        words = " ".join(f"{key}={escape(value)}" for key, value in fields.items() if value)
        release = escape(release)
        try:
            with open(self.revisions_log, "a") as handle:
                handle.write(f"{at} {action} release={release} {words}\n")
        except OSError as exc:
            raise StepFailed(f"writing {self.revisions_log}: {_os_message(exc)}") from None

    def prune(self, keep: int, protect: set[str]) -> list[str]:
        """Remove releases beyond the newest `keep` (never `protect`), and leftovers of killed builds."""
        releases = self.releases()
        doomed = [name for name in releases[: max(0, len(releases) - keep)] if name not in protect]
        doomed += self.partials()
        for name in doomed:
            self.remove(name)
        return doomed


def _makedirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StepFailed(f"cannot create {path}: {_os_message(exc)}") from None


def _os_message(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def source_excluder(
    root: str, patterns: tuple[str, ...], deploy_to: str
) -> Callable[[str, str], bool] | None:
    """`exclude:` patterns match a path relative to the source (`log/*.log`) or any base name (`*.tmp`)."""
    inside = os.path.realpath(deploy_to).startswith(os.path.realpath(root) + os.sep)
    if not patterns and not inside:
        return None
    cleaned = [p.rstrip("/") for p in patterns]
    skip = os.path.realpath(deploy_to)

    def excluded(path: str, name: str) -> bool:
        if inside and os.path.realpath(path) == skip:
            return True
        rel = os.path.relpath(path, root)
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in cleaned)

    return excluded


def _git_export(root: str, ref: str, destination: str) -> None:
    import subprocess

    os.makedirs(destination)
    archive = subprocess.Popen(
        ["git", "-C", root, "archive", "--format=tar", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    unpack = subprocess.run(["tar", "-x", "-C", destination], stdin=archive.stdout, capture_output=True)
    assert archive.stdout is not None
    archive.stdout.close()
    error = archive.stderr.read().decode(errors="replace").strip() if archive.stderr else ""
    if archive.wait() != 0:
        raise StepFailed(f"git archive {ref}: {error or 'failed'}")
    if unpack.returncode != 0:
        raise StepFailed(f"unpacking git archive {ref}: {unpack.stderr.decode(errors='replace').strip()}")
