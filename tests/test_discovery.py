"""Discovery: which hook files of an event run, in which order, across layers (run-parts rules)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ProjectDir
from juncture.sources.rundirs import Hook, Skipped, discover, discover_all

SCRIPT = "#!/bin/sh\nexit 0\n"


def make(path: Path, body: str = SCRIPT, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(mode)
    return path


def layers(*paths: Path) -> tuple[str, ...]:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return tuple(str(path) for path in paths)


def names(hooks: tuple[Hook, ...]) -> list[str]:
    return [hook.name for hook in hooks]


def skip_codes(skipped: list[Skipped]) -> dict[str, str]:
    return {skip.path: skip.code for skip in skipped}


def test_flat_file_runs_before_drop_ins(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    make(base / "ev.d" / "00-first")
    flat = make(base / "ev")

    hooks, skipped = discover(layers(base), "ev")

    assert [hook.path for hook in hooks] == [str(flat), str(base / "ev.d" / "00-first")]
    assert hooks[0].flat and not hooks[1].flat
    assert skipped == []


def test_drop_ins_run_in_byte_order_of_names(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    for name in ("b", "B", "a", "_u", "9", "10", "-x", "A"):
        make(base / "ev.d" / name)

    hooks, _ = discover(layers(base), "ev")

    assert names(hooks) == ["-x", "10", "9", "A", "B", "_u", "a", "b"]


def test_names_with_dots_are_accepted(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    make(base / "ev.d" / "10-migrate.sh")
    make(base / "ev.d" / "20.a.b.py")

    hooks, skipped = discover(layers(base), "ev")

    assert names(hooks) == ["10-migrate.sh", "20.a.b.py"]
    assert skipped == []


def test_later_layer_replaces_same_named_drop_in(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    replaced = make(base / "ev.d" / "10-x")
    winner = make(over / "ev.d" / "10-x")

    hooks, _ = discover(layers(base, over), "ev")

    assert len(hooks) == 1
    assert hooks[0].path == str(winner)
    assert hooks[0].layer == 1
    assert hooks[0].replaces == (str(replaced),)


def test_later_layer_replaces_flat_file(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    replaced = make(base / "ev")
    winner = make(over / "ev")

    hooks, _ = discover(layers(base, over), "ev")

    assert [hook.path for hook in hooks] == [str(winner)]
    assert hooks[0].flat
    assert hooks[0].replaces == (str(replaced),)


def test_drop_ins_of_different_names_merge_across_layers_in_name_order(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    make(base / "ev.d" / "10-a")
    make(base / "ev.d" / "30-c")
    make(over / "ev.d" / "20-b")

    hooks, _ = discover(layers(base, over), "ev")

    assert [(hook.name, hook.layer) for hook in hooks] == [("10-a", 0), ("20-b", 1), ("30-c", 0)]
    assert all(hook.replaces == () for hook in hooks)


def test_symlink_to_dev_null_masks_same_named_drop_in(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    make(base / "ev.d" / "10-x")
    make(base / "ev.d" / "20-y")
    mask = over / "ev.d" / "10-x"
    mask.parent.mkdir(parents=True)
    mask.symlink_to(os.devnull)

    hooks, skipped = discover(layers(base, over), "ev")

    assert names(hooks) == ["20-y"]
    assert skip_codes(skipped)[str(mask)] == "masked"


def test_symlink_to_dev_null_masks_flat_file(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    make(base / "ev")
    make(base / "ev.d" / "10-x")
    over.mkdir()
    (over / "ev").symlink_to(os.devnull)

    hooks, skipped = discover(layers(base, over), "ev")

    assert [hook.path for hook in hooks] == [str(base / "ev.d" / "10-x")]
    assert skip_codes(skipped)[str(over / "ev")] == "masked"


def test_non_executable_file_in_later_layer_still_replaces_earlier_file(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    earlier = make(base / "ev.d" / "10-x")
    make(over / "ev.d" / "10-x", mode=0o644)

    hooks, skipped = discover(layers(base, over), "ev")

    assert hooks == ()
    assert skip_codes(skipped)[str(earlier)] == "overridden"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".hidden", "hidden file"),
        ("10-x~", "'~'"),
        ("10-x.sample", "'.sample'"),
        ("10-x.bak", "'.bak'"),
        ("10-x.orig", "'.orig'"),
        ("10-x.swp", "'.swp'"),
        ("10-x.dpkg-old", "'.dpkg-old'"),
        ("10-x.dpkg-dist", "'.dpkg-dist'"),
        ("10-x.dpkg-new", "'.dpkg-new'"),
        ("10-x.dpkg-tmp", "'.dpkg-tmp'"),
        ("10-x.rpmnew", "'.rpmnew'"),
        ("10-x.rpmsave", "'.rpmsave'"),
        ("10 x", "characters other than"),
        ("10+x", "characters other than"),
        ("10@x", "characters other than"),
        ("10:x", "characters other than"),
        ("10-é", "characters other than"),
    ],
)
def test_hidden_leftover_and_odd_names_are_skipped_with_reason(
    tmp_path: Path, name: str, reason: str
) -> None:
    base = tmp_path / "hooks"
    path = make(base / "ev.d" / name)

    hooks, skipped = discover(layers(base), "ev")

    assert hooks == ()
    [skip] = skipped
    assert (skip.path, skip.code, skip.event) == (str(path), "name", "ev")
    assert reason in skip.reason


def test_non_executable_file_is_not_run(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    path = make(base / "ev.d" / "10-x", mode=0o644)

    hooks, skipped = discover(layers(base), "ev")

    assert hooks == ()
    assert [(s.path, s.code) for s in skipped] == [(str(path), "not-executable")]


def test_broken_symlink_is_not_run(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    (base / "ev.d").mkdir(parents=True)
    link = base / "ev.d" / "10-x"
    link.symlink_to(tmp_path / "gone")

    hooks, skipped = discover(layers(base), "ev")

    assert hooks == ()
    assert [(s.path, s.code) for s in skipped] == [(str(link), "broken-symlink")]


def test_fifo_is_not_run(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    (base / "ev.d").mkdir(parents=True)
    fifo = base / "ev.d" / "10-x"
    os.mkfifo(fifo, 0o755)

    hooks, skipped = discover(layers(base), "ev")

    assert hooks == ()
    assert [(s.path, s.code) for s in skipped] == [(str(fifo), "not-regular")]


def test_directory_inside_drop_in_dir_is_not_run(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    sub = base / "ev.d" / "10-x"
    sub.mkdir(parents=True, mode=0o755)

    hooks, skipped = discover(layers(base), "ev")

    assert hooks == ()
    assert [(s.path, s.code) for s in skipped] == [(str(sub), "not-regular")]


def test_missing_layer_contributes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    make(base / "ev.d" / "10-x")

    hooks, skipped = discover((str(tmp_path / "missing"), str(base)), "ev")

    assert names(hooks) == ["10-x"]
    assert hooks[0].layer == 1
    assert skipped == []


def test_order_matches_run_parts_for_tricky_names(tmp_path: Path) -> None:
    directory = tmp_path / "hooks" / "ev.d"
    runnable = ["A", "a", "B", "b", "_x", "_", "-dash", "--", "1", "10", "2", "010", "9z", "a_b", "a-b", "Z9"]
    for name in [*runnable, ".hidden", "x~", "10-migrate.sh", "a.b"]:
        make(directory / name)
    make(directory / "noexec", mode=0o644)
    (directory / "subdir").mkdir(mode=0o755)

    result = subprocess.run(
        ["/usr/bin/run-parts", "--test", str(directory)],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=True,
        timeout=30,
    )
    hooks, _ = discover((str(tmp_path / "hooks"),), "ev")

    run_parts_order = result.stdout.splitlines()
    juncture_order = [hook.path for hook in hooks]
    assert str(directory / "10-migrate.sh") in juncture_order  # juncture runs it, run-parts does not
    assert str(directory / "10-migrate.sh") not in run_parts_order
    assert [path for path in juncture_order if "." not in os.path.basename(path)] == run_parts_order
    assert sorted(run_parts_order) == sorted(str(directory / name) for name in runnable)


def test_discover_all_finds_events_from_flat_files_and_drop_in_dirs_in_every_layer(tmp_path: Path) -> None:
    base, over = tmp_path / "base", tmp_path / "over"
    make(base / "flat-only")
    make(base / "dir-only.d" / "10-x")
    make(over / "both")
    make(over / "both.d" / "10-x")
    make(over / "deploy" / "updated.d" / "10-x")
    make(base / "deploy" / "rollback")

    found = discover_all(layers(base, over))

    assert list(found.hooks) == ["both", "deploy:rollback", "deploy:updated", "dir-only", "flat-only"]
    assert [hook.path for hook in found.hooks["deploy:rollback"]] == [str(base / "deploy" / "rollback")]
    assert [hook.label for hook in found.hooks["both"]] == ["both", "both/10-x"]
    assert names(found.hooks["dir-only"]) == ["10-x"]


def test_discover_all_skips_leftover_names_at_layer_level(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    make(base / "pre-deploy")
    leftover = make(base / "pre-deploy.sample")
    backup = make(base / "pre-deploy~")

    found = discover_all(layers(base))

    assert list(found.hooks) == ["pre-deploy"]
    codes = {skip.path: skip.code for skip in found.skipped}
    assert codes == {str(leftover): "name", str(backup): "name"}


def test_discover_all_does_not_treat_hidden_drop_in_dir_as_event(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    make(base / "pre-deploy.d" / "10-x")
    make(base / ".old.d" / "10-x")

    found = discover_all(layers(base))

    assert list(found.hooks) == ["pre-deploy"]
    assert str(base / ".old.d") in {skip.path for skip in found.skipped}


def test_discover_all_finds_flat_file_of_event_with_colon_in_name(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    flat = make(base / "deploy" / "updated")
    assert [hook.path for hook in discover(layers(base), "deploy:updated")[0]] == [str(flat)]

    found = discover_all(layers(base))

    assert [hook.path for hook in found.hooks.get("deploy:updated", ())] == [str(flat)]
    assert found.skipped == ()


def test_literal_colon_file_name_is_skipped_with_the_directory_spelling(tmp_path: Path) -> None:
    base = tmp_path / "hooks"
    literal = make(base / "deploy:updated")

    found = discover_all(layers(base))

    assert "deploy:updated" not in found.hooks
    assert [(s.path, s.code) for s in found.skipped] == [(str(literal), "name")]
    assert "deploy/updated" in found.skipped[0].reason


def test_fire_runs_flat_file_then_drop_ins_across_layers(project: ProjectDir) -> None:
    project.config("app: shop\nhooks_path: [base, over]\n")
    log = project.root / "ran.log"
    body = f'#!/bin/sh\necho "$0" >> {log}\n'
    project.hook("ev", None, body, layer="base")
    project.hook("ev", "20-b", body, layer="base")
    project.hook("ev", "10-a", body, layer="base")
    project.hook("ev", "10-a", body, layer="over")
    project.hook("ev", "15-c", body, layer="over")

    result = project.run("fire", "ev")

    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        str(project.root / "base" / "ev"),
        str(project.root / "over" / "ev.d" / "10-a"),
        str(project.root / "over" / "ev.d" / "15-c"),
        str(project.root / "base" / "ev.d" / "20-b"),
    ]
