"""Validate `juncture.yaml` into a `Config`; every error names the file, line and key path."""

from __future__ import annotations

import os
import re
from typing import Any

from .._util.record import record
from ..model.catalogue import BUILT_IN
from ..model.event import (
    DEFAULT_GRACE,
    DEFAULT_TIMEOUT,
    FAILURE_MODES,
    LEFTOVERS_MODES,
    STDIN_MODES,
    EventSpec,
    FieldSpec,
    event_name_problem,
)
from ..state.logs import DEFAULT_KEEP_RUNS, DEFAULT_MAX_BYTES
from .deploy import DEPLOY_KEYS, DeployConfig, parse_deploy
from .hosts import AUDIENCE_FORMS, SELECTOR_KEYS, Selector, audience_problem, parse_selector
from .located import Located
from .values import mapping, scalar, seconds, string, string_list, whole

__all__ = ["DEFAULT_HOOKS_PATH", "Config", "parse_config"]

DEFAULT_HOOKS_PATH = ".juncture/hooks"
DEFAULT_ENV_PREFIX = "JUNCTURE_"

_TOP_KEYS = ("app", "env_prefix", "hooks_path", "timeout", "grace", "events", "logs", *DEPLOY_KEYS)
_EVENT_KEYS = (
    "description",
    "revision",
    "failure",
    "timeout",
    "grace",
    "audience",
    "parallel",
    "stdin",
    "leftovers",
    "fields",
    "secrets",
)
_FIELD_KEYS = ("required", "default", "description")
_PREFIX = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SECRET_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")  # as outputs.KEY (not imported: keep config light)


@record
class Config:
    file: str
    root: str
    app: str
    env_prefix: str
    layers: tuple[str, ...]  # absolute paths, base first
    events: dict[str, EventSpec]
    deploy: DeployConfig
    timeout: float = DEFAULT_TIMEOUT  # for events juncture.yaml does not declare
    grace: float = DEFAULT_GRACE
    layer_scopes: tuple[Selector, ...] = ()  # per layer: which targets its hooks reach (empty: all)
    keep_logs: int = DEFAULT_KEEP_RUNS  # logs: keep_runs
    max_log_bytes: int = DEFAULT_MAX_BYTES  # logs: max_bytes


def parse_config(doc: Located, root: str) -> Config:
    data = doc.data if doc.data is not None else {}
    mapping(doc, data, (), _TOP_KEYS)
    app = string(doc, data.get("app", os.path.basename(root)), ("app",))
    prefix = string(doc, data.get("env_prefix", DEFAULT_ENV_PREFIX), ("env_prefix",))
    if not _PREFIX.match(prefix):
        raise doc.error(
            ("env_prefix",), "expected upper-case letters, digits and _ (like JUNCTURE_ or KAMAL_)"
        )
    timeout = seconds(doc, data.get("timeout", DEFAULT_TIMEOUT), ("timeout",))
    grace = seconds(doc, data.get("grace", DEFAULT_GRACE), ("grace",), zero_ok=True)

    raw_layers = data.get("hooks_path", DEFAULT_HOOKS_PATH)
    if isinstance(raw_layers, str):
        raw_layers = [raw_layers]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise doc.error(("hooks_path",), "expected a path or a non-empty list of paths (layers, base first)")
    scopes = []
    paths = []
    for i, item in enumerate(raw_layers):
        key: tuple[str, ...] = ("hooks_path", str(i))
        if isinstance(item, dict):  # a layer scoped to roles, hosts or container kinds
            mapping(doc, item, key, ("path", *SELECTOR_KEYS))
            scopes.append(parse_selector(doc, item, key))
            item = item.get("path")
            key = (*key, "path")
        else:
            scopes.append(Selector())
        paths.append(string(doc, item, key))
    layers = tuple(os.path.normpath(os.path.join(root, path)) for path in paths)
    configured = "hooks_path" in data
    for i, layer in enumerate(layers):
        # The default layer may be missing (no hooks yet); a configured one is a promise.
        if not os.path.isdir(layer) and (configured or os.path.lexists(layer)):
            where = ("hooks_path", str(i)) if isinstance(data.get("hooks_path"), list) else ("hooks_path",)
            what = "is not a directory" if os.path.lexists(layer) else "does not exist"
            raise doc.error(where, f"hooks directory {layer} {what}")

    raw_events = data.get("events") or {}
    mapping(doc, raw_events, ("events",), None)
    events = {
        name: _event(doc, name, body, timeout, grace)
        for name, body in raw_events.items()
        if _named(doc, name)
    }
    deploy = parse_deploy(doc, data, root, lambda name: name in events or name in BUILT_IN)
    logs = _logs(doc, data.get("logs"))
    return Config(doc.file, root, app, prefix, layers, events, deploy, timeout, grace, tuple(scopes), *logs)


def _logs(doc: Located, raw: Any) -> tuple[int, int]:
    """`logs: {keep_runs: N, max_bytes: SIZE}`; SIZE is bytes, or a number with K, M, G or T."""
    if raw is None:
        return DEFAULT_KEEP_RUNS, DEFAULT_MAX_BYTES
    mapping(doc, raw, ("logs",), ("keep_runs", "max_bytes"))
    keep = whole(doc, raw.get("keep_runs", DEFAULT_KEEP_RUNS), ("logs", "keep_runs"), low=0)
    size = raw.get("max_bytes", DEFAULT_MAX_BYTES)
    found = re.match(r"(\d{1,19}) ?([KMGT]?)(?:i?B)?\Z", size, re.I) if isinstance(size, str) else None
    if found:
        size = int(found[1]) << 10 * " KMGT".index(found[2].upper() or " ")
    if type(size) is not int or not 0 <= size <= 1 << 60:
        raise doc.error(
            ("logs", "max_bytes"), "expected a size: bytes, or a number with K, M, G or T (1024s), like 500M"
        )
    return keep, size


def _named(doc: Located, name: Any) -> bool:
    problem = event_name_problem(str(name))
    if problem:
        raise doc.error(("events", str(name)), problem)
    return True


def _event(doc: Located, name: str, body: Any, timeout: float, grace: float) -> EventSpec:
    path = ("events", name)
    body = body if body is not None else {}
    mapping(doc, body, path, _EVENT_KEYS)
    revision = whole(doc, body.get("revision", 1), (*path, "revision"))
    failure = body.get("failure", "abort")
    if failure not in FAILURE_MODES:
        raise doc.error((*path, "failure"), "expected abort or continue")
    stdin = body.get("stdin", "null")
    if stdin not in STDIN_MODES:
        raise doc.error((*path, "stdin"), "expected null (read /dev/null) or inherit")
    leftovers = body.get("leftovers", "keep")
    if leftovers not in LEFTOVERS_MODES:
        raise doc.error((*path, "leftovers"), "expected keep or kill")
    parallel = whole(doc, body.get("parallel", 1), (*path, "parallel"))
    audience = string_list(doc, body.get("audience", ["local"]), (*path, "audience"))
    if not audience:
        raise doc.error((*path, "audience"), f"expected a list of: {', '.join(AUDIENCE_FORMS)}")
    for i, item in enumerate(audience):
        problem = audience_problem(item)
        if problem:
            raise doc.error((*path, "audience", str(i)), problem)
    secrets = string_list(doc, body.get("secrets", []), (*path, "secrets"))
    for i, key in enumerate(secrets):
        if not SECRET_KEY.match(key):
            raise doc.error((*path, "secrets", str(i)), f"{key!r}: a KV key (letters, digits, _ . -)")
    return EventSpec(
        name=name,
        revision=revision,
        failure=failure,
        timeout=seconds(doc, body.get("timeout", timeout), (*path, "timeout")),
        grace=seconds(doc, body.get("grace", grace), (*path, "grace"), zero_ok=True),
        audience=tuple(audience),
        parallel=parallel,
        stdin=stdin,
        leftovers=leftovers,
        fields=_fields(doc, body["fields"], (*path, "fields")) if "fields" in body else None,
        description=string(doc, body.get("description", ""), (*path, "description")),
        secrets=tuple(secrets),
        source=f"{os.path.basename(doc.file)}:{doc.line(path)}",
    )


def _fields(doc: Located, raw: Any, path: tuple[str, ...]) -> tuple[FieldSpec, ...]:
    if raw is None:
        return ()
    if isinstance(raw, list):
        raw = {string(doc, item, (*path, str(i))): None for i, item in enumerate(raw)}
    mapping(doc, raw, path, None)
    fields = []
    for name, body in raw.items():
        sub = (*path, str(name))
        if not _FIELD.match(str(name)):
            raise doc.error(sub, "a field name is letters, digits and _ (it becomes an environment variable)")
        body = body if body is not None else {}
        mapping(doc, body, sub, _FIELD_KEYS)
        required = body.get("required", False)
        if not isinstance(required, bool):
            raise doc.error((*sub, "required"), "expected true or false")
        default = body.get("default")
        fields.append(
            FieldSpec(
                name=str(name),
                required=required,
                default=None if default is None else scalar(doc, default, (*sub, "default")),
                description=string(doc, body.get("description", ""), (*sub, "description")),
            )
        )
    return tuple(fields)
