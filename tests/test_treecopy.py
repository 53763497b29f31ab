"""Release trees are copied and removed by this process and forked helpers, with the result of `cp -a`."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from juncture.release import copytree as treecopy
from juncture.release.copytree import copy_tree, remove_tree

DIRS, FILES = 30, 20  # 600 files: enough for the copy to fork its helpers


def _source(root: Path) -> Path:
    src = root / "src"
    for d in range(DIRS):
        sub = src / f"d{d:02d}"
        sub.mkdir(parents=True)
        for f in range(FILES):
            path = sub / f"f{f:02d}.txt"
            path.write_bytes(os.urandom(64 + d * f))
            os.utime(path, ns=(1_600_000_000_000_000_000 + f, 1_700_000_000_123_456_789 + d))
    (src / "d00" / "run.sh").write_text("#!/bin/sh\n")
    (src / "d00" / "run.sh").chmod(0o751)
    (src / "d01" / "app.conf.tpl").write_text("{{ stage }}\n")
    (src / "link-to-dir").symlink_to("d02")
    (src / "dangling").symlink_to("nowhere")
    (src / "empty").mkdir()
    (src / "skip-me").mkdir()
    (src / "skip-me" / "secret").write_text("not deployed\n")
    os.mkfifo(src / "dev-server.fifo")
    (src / "readonly").mkdir()
    (src / "readonly" / "file").write_text("kept\n")
    (src / "readonly").chmod(0o555)
    return src


def _listing(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under `root`: its type, mode and mtime, and its content or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISFIFO(st.st_mode):
                found[str(path.relative_to(root))] = ("fifo",)
            elif stat.S_ISDIR(st.st_mode):
                found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                found[str(path.relative_to(root))] = ("file", st.st_mode, st.st_mtime_ns, path.read_bytes())
    return found


def _children() -> list[str]:
    """The live child processes of this test process."""
    kids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as handle:
            kids += handle.read().split()
    return kids


def test_a_copy_keeps_contents_modes_times_and_links_and_leaves_out_excluded_paths_and_fifos(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)

    files, templates = copy_tree(
        str(src), str(tmp_path / "dst"), lambda path, name: name == "skip-me", suffix=".tpl"
    )

    expected = {
        rel: entry
        for rel, entry in _listing(src).items()
        if not rel.startswith("skip-me") and rel != "dev-server.fifo"
    }
    assert _listing(tmp_path / "dst") == expected
    assert files == DIRS * FILES + 5  # run.sh, app.conf.tpl, readonly/file and the two links
    assert templates == [str(tmp_path / "dst" / "d01" / "app.conf.tpl")]


def test_a_big_tree_is_shared_with_a_helper_process_when_there_is_a_spare_cpu() -> None:
    assert treecopy._helpers(treecopy.PARALLEL_MIN_FILES - 1) == 0
    cpus = len(os.sched_getaffinity(0))
    assert treecopy._helpers(DIRS * FILES) == min(cpus, treecopy.MAX_PROCESSES, 4) - 1


def test_no_process_is_forked_while_another_thread_runs() -> None:
    # fork() copies only the calling thread: a lock another thread holds would stay locked in the child.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert treecopy._helpers(10_000) == 0
    finally:
        stop.set()
        other.join()


def test_a_failure_in_any_process_raises_an_os_error_naming_the_file_and_leaves_no_helper(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)
    dst = tmp_path / "dst"

    def plant(path: str, name: str) -> bool:
        # While the walk lists a directory its copy exists: a file already there makes the copy fail.
        if name == "f07.txt":
            (dst / Path(path).parent.name / name).write_text("in the way\n")
        return False

    with pytest.raises(FileExistsError) as caught:
        copy_tree(str(src), str(dst), plant)

    assert Path(caught.value.filename).name == "f07.txt"
    assert Path(caught.value.filename).parent.parent == dst
    assert _children() == []


def test_remove_tree_removes_files_links_and_read_only_directories_without_following_links(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept\n")
    (src / "d03" / "out").symlink_to(outside)

    remove_tree(str(src))

    assert not src.exists()
    assert (outside / "keep").read_text() == "kept\n"
    assert _children() == []
