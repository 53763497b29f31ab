"""runners.libraries: the quick stand-in for ctypes.util.find_library used while asyncssh is imported."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from juncture.transports.libraries import find_library, quick_find_library


def test_find_library_gives_the_same_file_names_as_ctypes() -> None:
    names = ["c", "m", "z", "ssl", "crypto", "sqlite3", "oqs", "liboqs", "no-such-library-here"]
    found = {name: ctypes.util.find_library(name) for name in names}
    assert found["c"] is not None and found["no-such-library-here"] is None  # the comparison means something
    assert {name: find_library(name) for name in names} == found


def test_find_library_searches_ld_library_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libjuncturetest.so.7").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert find_library("juncturetest") == "libjuncturetest.so.7"


def test_quick_find_library_replaces_ctypes_only_inside_the_block() -> None:
    original = ctypes.util.find_library
    with quick_find_library():
        assert ctypes.util.find_library is find_library
    assert ctypes.util.find_library is original
