"""Runs that did less than asked say so: an event name nobody knows (a typo), hook files skipped as not
executable. The exit status stays 0; the line goes where the run's summary goes."""

from __future__ import annotations

import json

from conftest import ProjectDir

NOTE = "hooks skipped (not executable): see `juncture check`"


def test_fire_of_a_misspelt_event_names_the_close_one(project: ProjectDir) -> None:
    done = project.run("fire", "pre-deplyo")

    assert done.returncode == 0
    assert done.stderr == "juncture: no hooks for event 'pre-deplyo' (did you mean 'pre-deploy'?)\n"


def test_the_suggestion_comes_from_declared_and_on_disk_events_too(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  cache-warmup: {}\n")
    project.hook("db:migrate", "10-run", "#!/bin/sh\nexit 0\n")

    declared = project.run("fire", "cache-warmpu")
    on_disk = project.run("fire", "db:migrat", "--dry-run")
    unknown = project.run("fire", "zzzz", "--json")

    assert "(did you mean 'cache-warmup'?)" in declared.stderr
    assert "(did you mean 'db:migrate'?)" in on_disk.stderr
    assert unknown.returncode == 0
    assert unknown.stderr == (
        "juncture: no hooks for event 'zzzz' (no event of that name is declared, built in or on disk)\n"
    )
    assert [json.loads(line)["type"] for line in unknown.stdout.splitlines()] == ["run-start", "run-end"]


def test_a_known_event_without_hooks_gets_no_hint(project: ProjectDir) -> None:
    project.config("app: shop\nevents:\n  quiet-one: {}\n")

    (project.root / ".juncture/hooks/cache-warmup.d").mkdir(parents=True)  # on disk, empty for now

    for event in ("quiet-one", "pre-deploy", "cache-warmup"):
        done = project.run("fire", event)
        assert done.returncode == 0
        assert done.stderr == "", event


def test_fire_summary_counts_hooks_skipped_as_not_executable(project: ProjectDir) -> None:
    project.hook("pre-deploy", "10-ok", "#!/bin/sh\nexit 0\n")
    project.hook("pre-deploy", "20-forgot", "#!/bin/sh\nexit 0\n", mode=0o644)
    project.hook("pre-deploy", "30-forgot", "#!/bin/sh\nexit 0\n", mode=0o644)
    project.hook("post-deploy", "10-forgot", "#!/bin/sh\nexit 0\n", mode=0o644)

    some = project.run("fire", "pre-deploy")
    none = project.run("fire", "post-deploy")
    as_json = project.run("fire", "pre-deploy", "--json")

    assert some.returncode == 0
    last = some.stdout.splitlines()[-1]
    assert last.startswith("event pre-deploy: 1 ok in ") and last.endswith(f"; 2 {NOTE}")
    assert none.stdout == f"event post-deploy: no hooks; 1 {NOTE.replace('hooks', 'hook', 1)}\n"
    assert none.stderr == ""  # the files exist: not a typo
    assert as_json.stderr == f"juncture: 2 {NOTE}\n"
    assert all(json.loads(line) for line in as_json.stdout.splitlines())


def test_deploy_summary_counts_hooks_skipped_as_not_executable(project: ProjectDir) -> None:
    (project.root / "src").mkdir()
    (project.root / "src" / "app.txt").write_text("v1\n")
    project.config("app: shop\nsource: src\nstages:\n  prod:\n    deploy_to: out\n")
    project.hook("deploy:updated", "10-forgot", "#!/bin/sh\nexit 0\n", mode=0o644)
    project.hook("post-deploy", "10-forgot", "#!/bin/sh\nexit 0\n", mode=0o644)
    project.hook("notify", "10-not-fired", "#!/bin/sh\nexit 0\n", mode=0o644)

    done = project.run("deploy", "prod")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2].startswith("deployed ")
    assert lines[-1] == f"2 {NOTE}"
