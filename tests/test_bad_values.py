"""Values that would forge records, and configurations that would hang or exhaust juncture, end with
exit 2 and one line on stderr, at once, and change nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ProjectDir

FORGED = "1.0\n2099-01-01T00:00:00Z deployed release=20990101000000 version=evil by=?"


def deploy_project(project: ProjectDir) -> Path:
    (project.root / "src").mkdir()
    (project.root / "src" / "app.txt").write_text("v1\n")
    project.config("app: shop\nsource: src\nstages:\n  prod:\n    deploy_to: out\n")
    done = project.run("deploy", "prod", "--version", "1.0")
    assert done.returncode == 0, done.stderr
    return project.root / "out" / "revisions.log"


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("juncture: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def history(project: ProjectDir) -> str:
    done = project.run("history", "--json")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("deploy", "prod", "--version", FORGED), "contains a line break"),
        (("deploy", "prod", "--version", "1.0 release=20990101000000"), "contains a space"),
        (("deploy", "prod", "--version", "1.0\x1b[2K"), "control character \\x1b"),
        (("deploy", "prod", "--version", "1.0\u2028x"), "contains a line break"),
        (("rollback", "prod", "--to", "20990101\nx"), "contains a line break"),
        (("fire", "notify", "--set", f"version={FORGED}"), "contains a line break"),
        (("fire", "notify", "--verb", "fire\nx"), "contains a line break"),
    ],
)
def test_a_value_that_would_forge_a_record_is_refused_and_nothing_is_written(
    project: ProjectDir, args: tuple[str, ...], why: str
) -> None:
    revisions = deploy_project(project)
    log_before, history_before = revisions.read_text(), history(project)

    line = one_error(project.run(*args))

    assert why in line
    assert "\n" not in line
    assert revisions.read_text() == log_before
    assert history(project) == history_before
    assert len(list((project.root / "out" / "releases").iterdir())) == 1


def test_a_user_name_with_a_line_break_is_refused(project: ProjectDir) -> None:
    revisions = deploy_project(project)
    before = revisions.read_text()
    env = {**os.environ, "USER": "root\n2099-01-01T00:00:00Z deployed release=x by=root"}

    line = one_error(project.run("deploy", "prod", env=env))

    assert "user@host" in line and "contains a line break" in line
    assert revisions.read_text() == before


def test_the_python_api_refuses_a_forged_version(project: ProjectDir) -> None:
    from juncture.errors import UsageError
    from juncture.model.run import identity
    from juncture.pipeline.local import Pipeline, stage_of
    from juncture.project import load_project
    from juncture.render.pipeline import PipelineOutput

    deploy_project(project)
    loaded = load_project(str(project.root))
    with pytest.raises(UsageError, match="contains a line break"):
        Pipeline(loaded, stage_of(loaded, "prod"), "deploy", identity(), PipelineOutput(), version=FORGED)


def test_the_revisions_writer_escapes_what_gets_past_the_checks(tmp_path: Path) -> None:
    from juncture.release.local import LocalTarget

    target = LocalTarget(str(tmp_path))
    target.record("deployed", "20260101000000", version=FORGED, by="a b")

    lines = (tmp_path / "revisions.log").read_text().splitlines()
    assert len(lines) == 1
    assert "version=1.0\\x0a2099-01-01T00:00:00Z\\x20deployed" in lines[0]
    assert lines[0].endswith("by=a\\x20b")
    assert [r.release for r in target.revisions()] == ["20260101000000"]


# -- configurations that hung juncture or ended it with an internal error ----------------------------------

LAUGHS = "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]\n" for i in range(10)
)


def timed(project: ProjectDir, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """The run, its wall time, and its peak RSS in MiB (of this child, from getrusage)."""
    code = (
        "import resource, sys, time; from juncture.cli import main; t = time.monotonic(); c = main(sys.argv[1:]); "
        "sys.stdout.flush(); "
        "sys.stderr.write(f'@@{time.monotonic() - t} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'); "
        "sys.exit(c)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "-C", str(project.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    measured = done.stderr.splitlines()[-1]
    seconds, rss = measured.removeprefix("@@").split()
    stripped = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout, done.stderr.removesuffix(measured + "\n")
    )
    return stripped, float(seconds), int(rss) / 1024


CONFIGS = {
    "recursive alias": ("app: shop\nevents: &a {e: *a}\n", "recursive structure"),
    "recursive list": ("app: shop\nx: &a [*a]\n", "recursive structure"),
    "billion laughs": ("app: shop\n" + LAUGHS, "more than 100000 values once aliases are expanded"),
    "5000-digit integer": ("app: shop\ntimeout: " + "9" * 5000 + "\n", "an integer of 5000 characters"),
    "nan timeout": ("app: shop\ntimeout: .nan\n", "expected a number of seconds > 0"),
    "inf event timeout": ("app: shop\nevents:\n  e:\n    timeout: .inf\n", "expected a number of seconds"),
    "huge grace": ("app: shop\ngrace: 1.0e+300\n", "at most 1000000"),
    "huge revision": ("app: shop\nevents:\n  e:\n    revision: 99999999999999999999\n", "from 1 to"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_hostile_config_is_one_line_exit_2_quickly_and_small(project: ProjectDir, case: str) -> None:
    text, expected = CONFIGS[case]
    project.config(text)
    for args in (("check",), ("fire", "e"), ("fire", "e", "--dry-run")):
        done, seconds, rss = timed(project, *args)

        assert expected in one_error(done), case
        assert seconds < 1.0, (case, args, seconds)
        assert rss < 150, (case, args, rss)


TEMPLATES = {
    "range of 10**8": "{{ range(10**8) | list }}",
    "string times 10**10": "{{ 'x' * 10**10 }}",
    "loop in a loop": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "exponential macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(64) }}",
    "huge width": "{{ '%999999999d' % 1 }}",
    "division by zero": "{{ 1 / 0 }}",
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_a_template_bomb_in_a_task_is_a_render_error_naming_the_key(project: ProjectDir, case: str) -> None:
    project.config(
        "app: shop\nstages:\n  prod:\n    deploy_to: out\n"
        f'tasks:\n  migrate:\n    run: "{TEMPLATES[case]}"\n    on: [pre-deploy]\n'
    )
    for args in (
        ("fire", "pre-deploy"),
        ("fire", "pre-deploy", "--dry-run"),
        ("deploy", "prod", "--dry-run"),
    ):
        done, seconds, rss = timed(project, *args)

        line = one_error(done)
        assert "juncture.yaml:7:" in line and "At key: migrate =====> run: template:" in line, line
        assert seconds < 1.0, (case, args, seconds)
        assert rss < 150, (case, args, rss)
    assert not (project.root / "out").exists()


def test_a_bounded_template_still_renders_what_deploys_need(project: ProjectDir, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    project.config(
        "app: shop\ntasks:\n  show:\n"
        f"    run: \"echo '{{{{ app ~ '-' ~ version }}}} {{{{ [1, 2, 3] | join(',') }}}} "
        f"{{{{ '%s:%05d' % (app, 42) }}}} {{{{ '{{:>4}}'.format(7) }}}} "
        f"{{% for i in range(3) %}}{{{{ loop.index }}}}{{% endfor %}}' > {out}\"\n    on: [pre-deploy]\n"
    )
    started = time.monotonic()
    done = project.run("fire", "pre-deploy", "--set", "version=8")

    assert done.returncode == 0, done.stderr
    assert out.read_text() == "shop-8 1,2,3 shop:00042    7 123\n"
    assert time.monotonic() - started < 10
