"""Benchmark: `juncture deploy` against a plain POSIX shell script doing the same local deploy.

One run measures, with medians of interleaved repetitions, the wall time of

* `juncture -C PROJECT deploy bench -q` (`-q` only if `juncture deploy --help` offers it), deploying a
  source tree of 2,000 files (about 20 MB) to a local `deploy_to`;
* `sh deploy.sh`, a shell script that does the same work to another target: make the tree, copy the
  source to a new release with `cp -a`, link the shared `log` directory into it, swap `current` atomically
  (`ln -s` + `mv -T`), append to `revisions.log` and prune to the newest 3 releases;
* `python -c pass` with the interpreter juncture runs on (the fixed cost of starting it);

and reports the ratio juncture/shell against its target.

It is a measurement, not a test: it prints PASS/MISS next to the target and exits 0 (2 when juncture, sh
or a `deploy` command in juncture cannot be found, 1 when a sanity check or a timed command fails).

    python bench/deploy_vs_shell.py [--quick] [--json FILE]
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from timing import (
    BenchError,
    Command,
    cpu_busy,
    find_juncture,
    ms,
    num,
    ratio,
    run_checked,
    run_main,
    spread,
    time_interleaved,
    usable_cpus,
    verdict,
    write_report,
)

DIRS = 100
FILES_PER_DIR = 20
FILE_SIZE = 10 * 1024
KEEP_RELEASES = 3
STAGE = "bench"
REPETITIONS = 9
QUICK_REPETITIONS = 3

TARGET_RATIO = 1.5  # juncture / shell: at most

JUNCTURE = "juncture deploy"
SHELL = "sh deploy.sh"
PYTHON = "python -c pass"
TOOLS = (SHELL, JUNCTURE, PYTHON)

CONFIG = """\
app: bench
source: src            # the source tree, relative to the project directory
keep_releases: {keep}
shared:
  dirs: [log]
stages:
  {stage}:
    deploy_to: {deploy_to}
"""

# What a hand-written deploy does, in as few processes as it can: GNU `mv -T` for the atomic swap, GNU
# `date +%N` for a release name that stays unique (and sorts by time) at several deploys a second.
SHELL_SCRIPT = """\
set -eu
SRC={src}
D={deploy_to}
KEEP={keep}
mkdir -p "$D/releases" "$D/shared/log"
name=$(date -u +%Y%m%d%H%M%S.%N)
R="$D/releases/$name"
mkdir "$R"
cp -a "$SRC/." "$R"
rm -rf "$R/log"
ln -s "$D/shared/log" "$R/log"
ln -s "releases/$name" "$D/current.tmp" && mv -T "$D/current.tmp" "$D/current"
printf '%s %s\\n' "$name" "$SRC" >> "$D/revisions.log"
set -- "$D"/releases/*
drop=$(($# - KEEP))
while [ "$drop" -gt 0 ]; do
  rm -rf "$1"
  shift
  drop=$((drop - 1))
done
"""


# -- finding the tools --------------------------------------------------------------------------------


def find_sh() -> str:
    for candidate in ("/bin/sh", shutil.which("sh")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("sh not found (neither /bin/sh nor on PATH)", 2)


def deploy_argv(juncture: str, project: str) -> list[str]:
    """`juncture -C PROJECT deploy bench`, with `-q` if `deploy --help` offers it."""
    helped = subprocess.run(
        [juncture, "-C", project, "deploy", "--help"], capture_output=True, text=True, check=False
    )
    if helped.returncode != 0:
        output = (helped.stdout + helped.stderr).strip()
        raise BenchError(
            f"this juncture ({juncture}) has no working `deploy` command yet: "
            f"`juncture deploy --help` exited with {helped.returncode}"
            + (f":\n{output[-2000:]}" if output else ""),
            2,
        )
    argv = [juncture, "-C", project, "deploy", STAGE]
    if re.search(r"(?<![\w-])-q\b", helped.stdout):
        argv.append("-q")
    return argv


# -- building the trees -------------------------------------------------------------------------------


def make_source(directory: str) -> int:
    """DIRS x FILES_PER_DIR files of FILE_SIZE random bytes, plus `log/` for the shared link to replace.

    Returns the bytes written outside `log/`.
    """
    total = 0
    for d in range(DIRS):
        sub = os.path.join(directory, f"d{d:03d}")
        os.makedirs(sub)
        for f in range(FILES_PER_DIR):
            with open(os.path.join(sub, f"f{f:02d}.bin"), "wb") as handle:
                total += handle.write(os.urandom(FILE_SIZE))
    os.makedirs(os.path.join(directory, "log"))
    with open(os.path.join(directory, "log", "build.log"), "w", encoding="utf-8") as handle:
        handle.write("a log from the build that the shared log directory must replace\n")
    return total


def make_project(root: str, deploy_to: str) -> tuple[str, str, int]:
    """The juncture project `root/project`: `juncture.yaml` and the source tree `src/`.

    Returns the project, the source and the bytes in the source outside `log/`.
    """
    project = os.path.join(root, "project")
    source = os.path.join(project, "src")
    size = make_source(source)
    with open(os.path.join(project, "juncture.yaml"), "w", encoding="utf-8") as handle:
        # A JSON string is a YAML string: quoted, whatever the temporary path holds.
        handle.write(CONFIG.format(keep=KEEP_RELEASES, stage=STAGE, deploy_to=json.dumps(deploy_to)))
    return project, source, size


def make_shell_script(root: str, source: str, deploy_to: str) -> str:
    path = os.path.join(root, "deploy.sh")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            SHELL_SCRIPT.format(src=shlex.quote(source), deploy_to=shlex.quote(deploy_to), keep=KEEP_RELEASES)
        )
    return path


# -- sanity checks ------------------------------------------------------------------------------------


def tree_digest(top: str, skip: str = "log") -> dict[str, str]:
    """Every path under `top` (but the top-level `skip`) -> "dir", "link:TARGET" or the file's sha256."""
    found: dict[str, str] = {}

    def walk(directory: str, prefix: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if not prefix and entry.name == skip:
                    continue
                if entry.is_symlink():
                    found[relative] = "link:" + os.readlink(entry.path)
                elif entry.is_dir():
                    found[relative] = "dir"
                    walk(entry.path, relative + "/")
                else:
                    with open(entry.path, "rb") as handle:
                        found[relative] = hashlib.sha256(handle.read()).hexdigest()

    walk(top, "")
    return found


def check_target(tool: str, deploy_to: str, expected: Mapping[str, str], releases: int | None) -> None:
    """`current` must be a relative symlink to a release equal to the source, with `log` linked to shared.

    With `releases` given, `releases/` must also hold exactly that many entries (pruning worked).
    """
    problems: list[str] = []
    current = os.path.join(deploy_to, "current")
    shared_log = os.path.join(deploy_to, "shared", "log")
    release_dir = os.path.realpath(os.path.join(deploy_to, "releases"))
    if not os.path.islink(current):
        problems.append(f"{current} is not a symlink")
    else:
        target = os.readlink(current)
        resolved = os.path.realpath(current)
        if os.path.isabs(target):
            problems.append(f"{current} -> {target} is not a relative link")
        if os.path.dirname(resolved) != release_dir or not os.path.isdir(resolved):
            problems.append(f"{current} -> {target} is not a directory in {release_dir}")
        else:
            problems.extend(compare_trees(resolved, expected))
            log = os.path.join(current, "log")
            if not os.path.islink(log):
                problems.append(f"{log} is not a symlink")
            elif not os.path.isdir(shared_log) or os.path.realpath(log) != os.path.realpath(shared_log):
                problems.append(f"{log} -> {os.readlink(log)} does not resolve to the directory {shared_log}")
    revisions = os.path.join(deploy_to, "revisions.log")
    if not os.path.isfile(revisions) or os.path.getsize(revisions) == 0:
        problems.append(f"{revisions} is missing or empty")
    if releases is not None and os.path.isdir(release_dir):
        held = sorted(os.listdir(release_dir))
        if len(held) != releases:
            problems.append(f"{release_dir} holds {len(held)} release(s), expected {releases}: {held}")
    if problems:
        raise BenchError(
            f"{tool}: the deploy to {deploy_to} is not what it should be:\n  " + "\n  ".join(problems)
        )


def compare_trees(release: str, expected: Mapping[str, str]) -> list[str]:
    got = tree_digest(release)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = sorted(p for p in set(got) & set(expected) if got[p] != expected[p])
    problems = []
    for label, paths in (("missing", missing), ("unexpected", extra), ("different", differ)):
        if paths:
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            problems.append(f"{len(paths)} {label} path(s) in {release}: {shown}")
    return problems


def sanity_checks(
    commands: Mapping[str, Command], targets: Mapping[str, str], expected: Mapping[str, str]
) -> None:
    """One deploy of each, checked; then KEEP_RELEASES more, checked again with pruning."""
    for tool, target in targets.items():
        try:
            run_checked(*commands[tool])
        except BenchError as exc:
            raise BenchError(f"{tool}: the first (untimed) deploy failed: {exc}") from None
        check_target(tool, target, expected, None)
    for tool, target in targets.items():
        for _ in range(KEEP_RELEASES):
            run_checked(*commands[tool])
        check_target(tool, target, expected, KEEP_RELEASES)


# -- running and timing -------------------------------------------------------------------------------


def filesystem_of(path: str) -> str | None:
    """The type of the filesystem holding `path` (longest mount point in /proc/self/mounts), or None."""
    path = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return None
    return kind


def environment_notes(fs: str | None) -> list[str]:
    """Facts about this machine that move the figures, printed with them."""
    notes = []
    if fs != "tmpfs":
        notes.append(
            f"the temp dir is on {fs or 'an unknown filesystem'}: both deploys write through it, and on a "
            "slow or throttled disk the copy dominates (and evens out) both figures; "
            "TMPDIR=/dev/shm measures without the disk"
        )
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        notes.append(
            f"the CPUs were {busy:.0%} busy just before the run: other processes add noise to every figure"
        )
    spec = importlib.util.find_spec("juncture")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if (
        os.environ.get("PYTHONDONTWRITEBYTECODE")
        and locations
        and not os.path.isdir(os.path.join(locations[0], "__pycache__"))
    ):
        notes.append(
            f"PYTHONDONTWRITEBYTECODE is set and {locations[0]} has no __pycache__: every juncture run "
            "compiles its own modules from source, which inflates its time"
        )
    return notes


# -- the report ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        "deploy_vs_shell",
        "Time juncture deploy against a shell script (medians).",
        f"{QUICK_REPETITIONS} repetitions instead of {REPETITIONS}",
        bench,
        argv,
    )


def bench(quick: bool, json_file: str | None) -> int:
    juncture = find_juncture()
    sh = find_sh()
    python = sys.executable
    root = tempfile.mkdtemp(prefix="juncture-bench-")
    try:
        return measure(juncture, sh, python, root, quick, json_file)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(juncture: str, sh: str, python: str, root: str, quick: bool, json_file: str | None) -> int:
    repetitions = QUICK_REPETITIONS if quick else REPETITIONS
    print(f"juncture:  {juncture}")
    print(f"sh:        {sh} ({os.path.realpath(sh)})")
    print(f"python:    {python} ({platform.python_version()})")
    cpus = usable_cpus()
    load = os.getloadavg()[0]
    fs = filesystem_of(root)
    print(
        f"machine:   {platform.platform()}, {cpus} usable CPU(s), load average {load:.2f}"
        f"{', --quick' if quick else ''}"
    )
    print(f"temp dir:  {root} ({fs or 'filesystem unknown'})")
    notes = environment_notes(fs)
    for note in notes:
        print(f"note:      {note}")

    target_juncture = os.path.join(root, "target-juncture")
    target_shell = os.path.join(root, "target-shell")
    project, source, size = make_project(root, target_juncture)
    script = make_shell_script(root, source, target_shell)
    expected = tree_digest(source)
    files = DIRS * FILES_PER_DIR
    commands: dict[str, Command] = {
        SHELL: ([sh, script], None),
        JUNCTURE: (deploy_argv(juncture, project), None),
        PYTHON: ([python, "-c", "pass"], None),
    }
    print(
        f"source:    {files:,} files of {FILE_SIZE // 1024} KiB in {DIRS} directories "
        f"({size / 2**20:.1f} MiB), plus log/"
    )
    print(f"command:   {' '.join(commands[JUNCTURE][0]).replace(root, 'TMP')}")
    print()
    sanity_checks(commands, {SHELL: target_shell, JUNCTURE: target_juncture}, expected)

    samples = time_interleaved(commands, repetitions)
    medians = {tool: statistics.median(values) for tool, values in samples.items()}
    # Both deploys must still be right after the timed runs (and pruning must have kept up).
    check_target(SHELL, target_shell, expected, KEEP_RELEASES)
    check_target(JUNCTURE, target_juncture, expected, KEEP_RELEASES)

    print(f"Median wall time in ms (min..max in brackets), {repetitions} reps each, interleaved")
    for tool in TOOLS:
        print(f"  {tool:<16}{ms(medians[tool]):>10}  [{spread(samples[tool])}]")
    deploy_ratio = ratio(medians[JUNCTURE], medians[SHELL])
    print()
    print(
        f"Ratio juncture/shell: {ms(medians[JUNCTURE])} / {ms(medians[SHELL])} ms = {num(deploy_ratio)}"
        f"   target <= {TARGET_RATIO:g}  {verdict(deploy_ratio, TARGET_RATIO)}"
    )
    beyond_start = medians[JUNCTURE] - medians[PYTHON]
    print(
        f"juncture beyond a bare interpreter start (juncture - python -c pass): {ms(beyond_start)} ms; "
        f"ratio of that to shell: {num(ratio(beyond_start, medians[SHELL]))}"
    )

    if json_file:
        report: dict[str, Any] = {
            "tools": {"juncture": commands[JUNCTURE][0], "sh": sh, "python": python},
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "usable_cpus": cpus,
            "load_average_at_start": load,
            "filesystem": fs,
            "notes": notes,
            "quick": quick,
            "unit": "seconds",
            "source": {"files": files, "bytes": size, "keep_releases": KEEP_RELEASES},
            "repetitions": repetitions,
            "samples": samples,
            "median": medians,
            "targets": {
                "juncture_shell_ratio": {
                    "value": deploy_ratio,
                    "target": f"<= {TARGET_RATIO:g}",
                    "verdict": verdict(deploy_ratio, TARGET_RATIO),
                }
            },
        }
        write_report(json_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
