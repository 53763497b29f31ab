"""Typed events in Python: naming, fields as variables, failure modes through `fire`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import ProjectDir
from juncture import Event, HookFailed, fire
from juncture.render.terminal import TerminalReporter


class EventProjectPreStart(Event):
    timeout = 30
    project: str
    runtime: str = "php"
    replicas: int = 2
    debug: bool = False


class EventMpdPreStop(Event):
    failure = "continue"


def test_name_is_class_name_without_prefix_in_kebab_case() -> None:
    assert EventProjectPreStart.event_name == "project-pre-start"
    assert EventMpdPreStop.event_name == "mpd-pre-stop"

    class EventHTTPHealthCheck(Event):
        pass

    assert EventHTTPHealthCheck.event_name == "http-health-check"


def test_fields_become_prefixed_variables(project: ProjectDir, tmp_path: Path) -> None:
    dump = tmp_path / "env"
    project.hook("project-pre-start", "10-dump", f"#!/bin/sh\nenv > {dump}\n")
    out = io.BytesIO()
    result = fire(
        EventProjectPreStart(project="shop", debug=True),
        verb="start",
        project=str(project.root),
        reporter=TerminalReporter(stream=out),
    )
    assert result.status == "ok"
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert env["JUNCTURE_PROJECT"] == "shop"
    assert env["JUNCTURE_RUNTIME"] == "php"
    assert env["JUNCTURE_REPLICAS"] == "2"
    assert env["JUNCTURE_DEBUG"] == "true"
    assert env["JUNCTURE_VERB"] == "start"
    assert env["JUNCTURE_EVENT"] == "project-pre-start"
    assert b"project-pre-start/10-dump" in out.getvalue()


def test_abort_event_raises_hook_failed(project: ProjectDir) -> None:
    project.hook("project-pre-start", "10-bad", "#!/bin/sh\nexit 5\n")
    with pytest.raises(
        HookFailed, match=r"event project-pre-start aborted: hook .*10-bad exited with code 5"
    ):
        fire(
            EventProjectPreStart(project="shop"),
            project=str(project.root),
            reporter=TerminalReporter(stream=io.BytesIO()),
        )


def test_continue_event_returns_failures_and_runs_the_rest(project: ProjectDir, tmp_path: Path) -> None:
    project.hook("mpd-pre-stop", "10-bad", "#!/bin/sh\nexit 1\n")
    project.hook("mpd-pre-stop", "20-ok", f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    result = fire(
        EventMpdPreStop(), project=str(project.root), reporter=TerminalReporter(stream=io.BytesIO())
    )
    assert [r.status for r in result.hooks] == ["failed", "ok"]
    assert (tmp_path / "ran").exists()


def test_class_options_apply_timeout(project: ProjectDir) -> None:
    class EventQuick(Event):
        timeout = 0.3
        grace = 0.1

    project.hook("quick", "10-slow", "#!/bin/sh\nexec sleep 20\n")
    with pytest.raises(HookFailed, match=r"timed out after 0\.3 s"):
        fire(EventQuick(), project=str(project.root), reporter=TerminalReporter(stream=io.BytesIO()))


def test_missing_field_and_bad_options_are_type_errors() -> None:
    with pytest.raises(TypeError):
        EventProjectPreStart()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="failure must be one of abort, continue"):

        class EventBad(Event):
            failure = "maybe"


def test_events_are_frozen() -> None:
    event = EventProjectPreStart(project="shop")
    with pytest.raises(AttributeError):
        event.project = "other"  # type: ignore[misc]


def test_library_fire_from_another_directory_runs_many_fast_parallel_hooks(project: ProjectDir) -> None:
    # Outside the project root hooks start through subprocess; none may be reaped behind the engine's back.
    project.config("events:\n  burst: {parallel: 4}\n")
    for i in range(40):
        project.hook("burst", f"{i:02d}-fast", "#!/bin/sh\nexit 0\n")

    class EventBurst(Event):
        pass

    for _ in range(3):
        result = fire(EventBurst(), project=str(project.root), reporter=TerminalReporter(stream=io.BytesIO()))
        assert [r.status for r in result.hooks] == ["ok"] * 40
