"""Malformed configurations, generated: `check`, `list`, `fire --dry-run` and `deploy --dry-run` end with
0, 1 or 2 (an error is one line), never an internal error, a hang or a burst of memory.

Each example starts from a valid juncture.yaml that uses most of the schema, then swaps values for
wrong types, huge or non-finite numbers, template bombs and alias bombs, adds unknown keys, duplicates
lines and breaks the UTF-8. The commands run in this process (juncture.cli.main), so a hundred examples
take seconds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import resource
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juncture.cli import main

BASE: dict[str, Any] = {
    "app": "shop",
    "timeout": 30,
    "grace": 2,
    "events": {
        "pre-deploy": {
            "description": "checks",
            "timeout": 5,
            "parallel": 2,
            "revision": 1,
            "fields": {"version": {"required": False, "default": "1"}},
            "secrets": ["db.pass"],
        },
        "notify": {"failure": "continue", "audience": ["local"]},
    },
    "variables": {"port": 8080},
    "stages": {
        "prod": {"deploy_to": "releases-prod", "keep_releases": 3, "variables": {"region": "eu"}},
        "web": {
            "deploy_to": "/srv/{{ app }}",
            "hosts": [{"name": "h1", "address": "127.0.0.1", "port": 2222, "roles": ["web"]}],
            "on_unreachable": "skip",
            "concurrency": 4,
            "ssh": {"connect_timeout": 3, "keepalive": 5},
            "rollout": {"max_concurrent": 1},
            "health": {"http": "http://{{ host.address }}/", "retries": 2, "interval": 1, "timeout": 2},
        },
    },
    "tasks": {
        "migrate": {
            "run": "echo {{ version }} {{ port }}",
            "timeout": 10,
            "on": ["pre-deploy", "deploy:updated"],
            "env": {"REGION": "{{ region | default('none') }}"},
        },
        "warm": "echo warm {{ release }}",
    },
    "hooks": {"after": {"deploy:published": ["warm"]}},
    "shared": {"dirs": ["log"]},
    "phases": [{"name": "deploy:assets", "after": "deploy:updated"}],
}

TEMPLATE_BOMBS = [
    "{{ range(10**8) | list }}",
    "{{ 'x' * 10**10 }}",
    "{{ 10 ** 10 ** 10 ** 10 }}",
    "{{ 'x'.center(10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ 1 / 0 }}",
    "{{ undefined_name }}",
    "{{ ",
    "{{ ''.__class__ }}",
]


def _laughs(levels: int) -> list[Any]:
    """Nested lists that share their items: yaml.dump writes them as anchors and aliases."""
    node: list[Any] = ["lol"] * 9
    for _ in range(levels):
        node = [node] * 9
    return node


def _recursive() -> list[Any]:
    node: list[Any] = []
    node.append(node)
    return node


BAD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            "",
            [],
            {},
            float("nan"),
            float("inf"),
            float("-inf"),
            1e308,
            10**30,
            10**4200,  # yaml.dump cannot write more digits (Python's int-to-text limit)
            2**63,
            "x" * 10_000,
            "a\nb",
            "\x1b[31mred",
            "1.0\n20990101 deployed release=fake",
            {"unknown_key": 1},
            [[[[[[["deep"]]]]]]],
        ]
    ),
    st.sampled_from(TEMPLATE_BOMBS),
    st.integers(min_value=1, max_value=9).map(_laughs),
    st.just(0).map(lambda _: _recursive()),
    st.text(max_size=20),
    st.integers(min_value=-(10**100), max_value=10**100),
    st.floats(),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    data = copy.deepcopy(BASE)
    paths = _paths(data)[1:]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "replace", "unknown", "delete"]))
            if action == "replace":
                parent[path[-1]] = draw(BAD_VALUES)
            elif action == "unknown" and isinstance(parent, dict):
                parent[draw(st.sampled_from(["timout", "extra", "1", "hosts", "on"]))] = draw(BAD_VALUES)
            elif isinstance(parent, dict):
                parent.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced the way there
    text = yaml.dump(data, sort_keys=False, width=1_000_000).encode()
    lines = text.splitlines(keepends=True)
    tweak = draw(st.sampled_from(["none", "none", "duplicate", "not-utf8", "truncate"]))
    at = draw(st.integers(min_value=0, max_value=max(0, len(lines) - 1)))
    if tweak == "duplicate" and lines:
        lines.insert(at, lines[at])
    elif tweak == "not-utf8" and lines:
        lines[at] = lines[at][:3] + b"\xff\xfe" + lines[at][3:]
    elif tweak == "truncate":
        lines = lines[:at]
    return b"".join(lines)


COMMANDS = (
    ("check",),
    ("list",),
    ("fire", "pre-deploy", "--dry-run"),
    ("deploy", "prod", "--dry-run"),
    ("deploy", "web", "--dry-run"),
)


def _run(root: Path, args: tuple[str, ...]) -> tuple[int, str, float]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    here = os.getcwd()
    began = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["-C", str(root), *args])
    finally:
        os.chdir(here)
    return code, err.getvalue(), time.monotonic() - began


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=configs())
def test_malformed_configs_end_in_0_1_or_2_quickly(tmp_path: Path, text: bytes) -> None:
    root = tmp_path / "proj"
    (root / ".juncture" / "hooks" / "pre-deploy.d").mkdir(parents=True, exist_ok=True)
    hook = root / ".juncture" / "hooks" / "pre-deploy.d" / "10-check"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    (root / "juncture.yaml").write_bytes(text)
    for args in COMMANDS:
        code, err, seconds = _run(root, args)
        assert code in (0, 1, 2), (args, code, err, text)
        assert "internal error" not in err and "Traceback" not in err, (args, err, text)
        if code == 2:
            assert len(err.splitlines()) == 1, (args, err, text)
        assert seconds < 3, (args, seconds, text)
    # Memory: what the bombs would have taken is gigabytes; the whole test stays far below.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1024 * 1024  # KiB: 1 GiB
