"""Where a stage runs: its SSH hosts, containers, rollout and health gate; and the selectors that place a
hook or task on some of them. Every error names the file, line and key path."""

from __future__ import annotations

import os
import re
from typing import Any

from .._util.record import record
from .located import Located
from .values import kind, mapping, seconds, string, string_list, whole

__all__ = [
    "AUDIENCE_FORMS",
    "HOST_STAGE_KEYS",
    "Container",
    "Health",
    "Host",
    "Placement",
    "Rollout",
    "Selector",
    "SshOptions",
    "audience_problem",
    "parse_placement",
    "parse_selector",
]

HOST_STAGE_KEYS = ("hosts", "ssh", "rollout", "health", "on_unreachable", "containers", "concurrency")
SELECTOR_KEYS = ("local", "roles", "hosts", "once", "containers")
_NAME = re.compile(r"[A-Za-z0-9_.@+-]+\Z")
_HOST_KEYS = ("name", "address", "port", "user", "roles", "primary")
_SSH_KEYS = (
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "known_hosts_file",
    "connect_timeout",
    "keepalive",
    "config_file",
    "agent",
)
_KNOWN_HOSTS = ("strict", "accept-new")
_ENGINES = ("podman", "docker")
DEFAULT_CONCURRENCY = 64
AUDIENCE_FORMS = ("local", "hosts", "role:NAME", "host:NAME", "container:KIND")


@record
class Host:
    name: str
    address: str
    port: int | None = None  # None: ~/.ssh/config, else 22
    user: str | None = None
    roles: tuple[str, ...] = ()
    primary: bool = False


@record
class SshOptions:
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = "strict"  # or accept-new: an unknown host's key is added; a changed key still fails
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    keepalive: float = 15.0
    config_file: str | None = None  # None: ~/.ssh/config when it exists
    agent: bool = True  # use $SSH_AUTH_SOCK when set


@record
class Container:
    name: str
    kind: str  # database | runtime | service:NAME | anything an audience names
    engine: str = "podman"
    host: str | None = None  # a stage host's name; None: this machine


@record
class Rollout:
    max_concurrent: int | None = None  # None: every host in one batch
    order: tuple[str, ...] = ()  # host names; () : the hosts' order
    auto_rollback: bool = False


@record
class Health:
    http: tuple[str, int] | None = None  # (url template, expected status)
    tcp: tuple[str, int] | None = None  # (host template, port)
    command: str | None = None  # run on the host
    retries: int = 10
    interval: float = 1.0
    timeout: float = 5.0  # per probe


@record
class Placement:
    """A stage's targets. No hosts: everything runs on this machine, as before."""

    hosts: tuple[Host, ...] = ()
    ssh: SshOptions = SshOptions()
    containers: tuple[Container, ...] = ()
    rollout: Rollout = Rollout()
    health: Health | None = None
    on_unreachable: str = "abort"  # or skip
    concurrency: int = DEFAULT_CONCURRENCY

    @property
    def primary(self) -> Host | None:
        return next((h for h in self.hosts if h.primary), self.hosts[0] if self.hosts else None)

    def rollout_order(self) -> tuple[Host, ...]:
        by_name = {h.name: h for h in self.hosts}
        ordered = [by_name[name] for name in self.rollout.order]
        return (*ordered, *(h for h in self.hosts if h.name not in self.rollout.order))


@record
class Selector:
    """Which targets a task or hook reaches. Empty: the default of where it is used."""

    local: bool = False
    roles: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    once: bool = False
    containers: tuple[str, ...] = ()  # container kinds
    where: str = ""  # juncture.yaml:LINE or the hook file, for messages

    def __bool__(self) -> bool:
        return bool(self.local or self.roles or self.hosts or self.once or self.containers)


def audience_problem(item: str) -> str | None:
    kind, _, name = item.partition(":")
    if item in ("local", "hosts") or (kind in ("role", "host", "container") and name):
        return None
    return f"{item!r} is not an audience (expected {', '.join(AUDIENCE_FORMS)})"


def parse_selector(doc: Located, body: dict[str, Any], path: tuple[str, ...]) -> Selector:
    def flag(key: str) -> bool:
        value = body.get(key, False)
        if not isinstance(value, bool):
            raise doc.error((*path, key), "expected true or false")
        return value

    return Selector(
        local=flag("local"),
        roles=string_list(doc, body.get("roles", []), (*path, "roles")),
        hosts=string_list(doc, body.get("hosts", []), (*path, "hosts")),
        once=flag("once"),
        containers=string_list(doc, body.get("containers", []), (*path, "containers")),
        where=f"{os.path.basename(doc.file)}:{doc.line(path)}",
    )


def parse_placement(doc: Located, body: dict[str, Any], path: tuple[str, ...]) -> Placement:
    hosts = tuple(
        _host(doc, item, (*path, "hosts", str(i))) for i, item in enumerate(_list(doc, body, "hosts", path))
    )
    names = [h.name for h in hosts]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise doc.error((*path, "hosts", str(i)), f"host {name!r} is listed twice")
    primaries = [i for i, h in enumerate(hosts) if h.primary]
    if len(primaries) > 1:
        raise doc.error((*path, "hosts", str(primaries[1]), "primary"), "only one host can be primary")
    containers = tuple(
        _container(doc, item, (*path, "containers", str(i)), names)
        for i, item in enumerate(_list(doc, body, "containers", path))
    )
    on_unreachable = body.get("on_unreachable", "abort")
    if on_unreachable not in ("abort", "skip"):
        raise doc.error((*path, "on_unreachable"), "expected abort or skip")
    concurrency = whole(doc, body.get("concurrency", DEFAULT_CONCURRENCY), (*path, "concurrency"))
    return Placement(
        hosts=hosts,
        ssh=_ssh(doc, body.get("ssh") or {}, (*path, "ssh")),
        containers=containers,
        rollout=_rollout(doc, body.get("rollout") or {}, (*path, "rollout"), names),
        health=_health(doc, body["health"], (*path, "health")) if body.get("health") else None,
        on_unreachable=on_unreachable,
        concurrency=concurrency,
    )


def _list(doc: Located, body: dict[str, Any], key: str, path: tuple[str, ...]) -> list[Any]:
    value = body.get(key) or []
    if not isinstance(value, list):
        raise doc.error((*path, key), f"expected a list, got {kind(value)}")
    return value


def _name(doc: Located, value: Any, path: tuple[str, ...]) -> str:
    name = string(doc, value, path)
    if not _NAME.match(name):
        raise doc.error(path, "a name is letters, digits and _ . @ + -")
    return name


def _port(doc: Located, value: Any, path: tuple[str, ...]) -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise doc.error(path, "expected a port number (1-65535)")
    return value


def _host(doc: Located, value: Any, path: tuple[str, ...]) -> Host:
    if isinstance(value, str):  # `db-1.internal`: name and address
        return Host(name=_name(doc, value, path), address=value)
    mapping(doc, value, path, _HOST_KEYS)
    if "name" not in value and "address" not in value:
        raise doc.error(path, "a host needs a name or an address")
    name = _name(doc, value.get("name", value.get("address")), (*path, "name"))
    primary = value.get("primary", False)
    if not isinstance(primary, bool):
        raise doc.error((*path, "primary"), "expected true or false")
    return Host(
        name=name,
        address=string(doc, value.get("address", name), (*path, "address")),
        port=_port(doc, value["port"], (*path, "port")) if "port" in value else None,
        user=string(doc, value["user"], (*path, "user")) if "user" in value else None,
        roles=string_list(doc, value.get("roles", []), (*path, "roles")),
        primary=primary,
    )


def _ssh(doc: Located, body: Any, path: tuple[str, ...]) -> SshOptions:
    mapping(doc, body, path, _SSH_KEYS)
    known = body.get("known_hosts", "strict")
    if known not in _KNOWN_HOSTS:
        raise doc.error(
            (*path, "known_hosts"), "expected strict or accept-new (host keys are always verified)"
        )

    def file(key: str) -> str | None:
        return os.path.expanduser(string(doc, body[key], (*path, key))) if key in body else None

    agent = body.get("agent", True)
    if not isinstance(agent, bool):
        raise doc.error((*path, "agent"), "expected true or false")
    return SshOptions(
        user=string(doc, body["user"], (*path, "user")) if "user" in body else None,
        port=_port(doc, body["port"], (*path, "port")) if "port" in body else None,
        identity_file=file("identity_file"),
        known_hosts=known,
        known_hosts_file=file("known_hosts_file"),
        connect_timeout=seconds(doc, body.get("connect_timeout", 10), (*path, "connect_timeout")),
        keepalive=seconds(doc, body.get("keepalive", 15), (*path, "keepalive"), zero_ok=True),
        config_file=file("config_file"),
        agent=agent,
    )


def _container(doc: Located, value: Any, path: tuple[str, ...], hosts: list[str]) -> Container:
    mapping(doc, value, path, ("name", "kind", "engine", "host"))
    for key in ("name", "kind"):
        if key not in value:
            raise doc.error(path, f"missing key {key}")
    engine = value.get("engine", "podman")
    if engine not in _ENGINES:
        raise doc.error((*path, "engine"), "expected podman or docker")
    host = value.get("host")
    if host is not None and host not in hosts:
        raise doc.error(
            (*path, "host"), f"no host {host!r} in this stage (hosts: {', '.join(hosts) or 'none'})"
        )
    return Container(
        name=_name(doc, value["name"], (*path, "name")),
        kind=string(doc, value["kind"], (*path, "kind")),
        engine=engine,
        host=host,
    )


def _rollout(doc: Located, body: Any, path: tuple[str, ...], hosts: list[str]) -> Rollout:
    mapping(doc, body, path, ("max_concurrent", "order", "auto_rollback"))
    limit = body.get("max_concurrent")
    if limit is not None:
        whole(doc, limit, (*path, "max_concurrent"))
    order = string_list(doc, body.get("order", []), (*path, "order"))
    for i, name in enumerate(order):
        if name not in hosts:
            raise doc.error((*path, "order", str(i)), f"no host {name!r} in this stage")
        if name in order[:i]:
            raise doc.error((*path, "order", str(i)), f"host {name!r} is listed twice")
    auto = body.get("auto_rollback", False)
    if not isinstance(auto, bool):
        raise doc.error((*path, "auto_rollback"), "expected true or false")
    return Rollout(limit, order, auto)


def _health(doc: Located, body: Any, path: tuple[str, ...]) -> Health:
    mapping(doc, body, path, ("http", "tcp", "command", "retries", "interval", "timeout"))
    http = tcp = None
    if "http" in body:
        raw = body["http"]
        if isinstance(raw, str):
            raw = {"url": raw}
        mapping(doc, raw, (*path, "http"), ("url", "expect_status"))
        status = raw.get("expect_status", 200)
        if type(status) is not int or not 100 <= status < 600:
            raise doc.error((*path, "http", "expect_status"), "expected an HTTP status code")
        http = (string(doc, raw.get("url"), (*path, "http", "url")), status)
    if "tcp" in body:
        raw = body["tcp"]
        mapping(doc, raw, (*path, "tcp"), ("host", "port"))
        tcp = (
            string(doc, raw.get("host", "{{ host.address }}"), (*path, "tcp", "host")),
            _port(doc, raw.get("port"), (*path, "tcp", "port")),
        )
    retries = whole(doc, body.get("retries", 10), (*path, "retries"))
    return Health(
        http=http,
        tcp=tcp,
        command=string(doc, body["command"], (*path, "command")) if "command" in body else None,
        retries=retries,
        interval=seconds(doc, body.get("interval", 1), (*path, "interval"), zero_ok=True),
        timeout=seconds(doc, body.get("timeout", 5), (*path, "timeout")),
    )
