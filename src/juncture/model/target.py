"""Where hooks run: this machine, a stage's SSH hosts, containers. Pure data and pure rules.

An event's `audience` names the targets its directory hooks reach; a task's selector (`local`, `roles`,
`hosts`, `once`, `containers`) names its own. A layer scoped to roles or container kinds adds its hooks
only on matching targets, so a postgres layer's hook never runs in a mariadb container.
"""

from __future__ import annotations

from collections.abc import Callable

from .._util.record import record
from ..config.hosts import Container, Host, Placement, Selector
from ..errors import UsageError

__all__ = [
    "LOCAL",
    "Target",
    "header_selector",
    "matches",
    "resolve_audience",
    "select",
    "visible",
]


@record
class Target:
    kind: str  # local | ssh | container
    name: str  # "local", a host's name or a container's name
    host: Host | None = None  # ssh: the host; container: the host it runs on (None: this machine)
    container: Container | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        return self.host.roles if self.host is not None and self.kind == "ssh" else ()


LOCAL = Target("local", "local")


def _host_target(host: Host) -> Target:
    return Target("ssh", host.name, host)


def _container_target(placement: Placement, container: Container) -> Target:
    host = next((h for h in placement.hosts if h.name == container.host), None)
    return Target("container", container.name, host, container)


def resolve_audience(audience: tuple[str, ...], placement: Placement, event: str) -> list[Target]:
    """The targets an audience names, in the order named, each once. Without hosts, `hosts` is this
    machine (a stage that deploys locally)."""
    found: list[Target] = []
    for item in audience:
        kind, _, name = item.partition(":")
        if item == "local":
            picked = [LOCAL]
        elif item == "hosts":
            picked = [_host_target(h) for h in placement.hosts] or [LOCAL]
        elif kind == "role":
            picked = [_host_target(h) for h in placement.hosts if name in h.roles]
        elif kind == "host":
            picked = [_host_target(h) for h in placement.hosts if h.name == name]
            if not picked:
                raise UsageError(f"event {event}: audience {item}: the stage has no host {name!r}")
        else:
            picked = [_container_target(placement, c) for c in placement.containers if c.kind == name]
        found += [t for t in picked if t not in found]
    return found


def select(
    selector: Selector, placement: Placement, present: Callable[[Target], bool] = lambda _: True
) -> list[Target]:
    """The targets of a task: its selector, else every host of the stage (this machine without hosts).
    `once` picks the primary host, else the first; among the hosts `present` in the run."""
    if selector.local:
        return [LOCAL]
    if selector.containers:
        return [
            _container_target(placement, c) for c in placement.containers if c.kind in selector.containers
        ]
    hosts = [
        h
        for h in placement.hosts
        if (not selector.roles or set(selector.roles) & set(h.roles))
        and (not selector.hosts or h.name in selector.hosts)
    ]
    if selector.once:
        hosts = [h for h in hosts if present(_host_target(h))]
        primary = placement.primary
        hosts = [primary if primary is not None and primary in hosts else hosts[0]] if hosts else []
    if not placement.hosts:
        return [LOCAL]
    return [_host_target(h) for h in hosts]


def matches(selector: Selector, target: Target) -> bool:
    """Whether a scoped layer or a hook's header lets it run on `target` (an empty selector: anywhere)."""
    if not selector:
        return True
    if target.kind == "local":
        return selector.local
    if target.kind == "container":
        assert target.container is not None
        return target.container.kind in selector.containers
    return bool(set(selector.roles) & set(target.roles)) or target.name in selector.hosts


def visible(layers: tuple[str, ...], scopes: tuple[Selector, ...], target: Target) -> tuple[str, ...]:
    """The layers whose hooks reach `target`, base first."""
    return tuple(layer for layer, scope in zip(layers, scopes, strict=True) if matches(scope, target))


_HEADER = b"juncture:"


def header_selector(path: str) -> Selector | None:
    """A `# juncture: roles=web,worker hosts=web-1 once local containers=database` line among a hook's
    first lines places it like a task's selector; None without one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return None
    for raw in head.split(b"\n")[:6]:
        line = raw.lstrip(b"#/-; \t")
        if not line.startswith(_HEADER):
            continue
        fields: dict[str, tuple[str, ...]] = {}
        flags: set[str] = set()
        for word in line[len(_HEADER) :].decode("utf-8", "replace").split():
            key, eq, value = word.partition("=")
            if eq:
                fields[key] = tuple(v for v in value.split(",") if v)
            else:
                flags.add(key)
        unknown = (set(fields) - {"roles", "hosts", "containers"}) | (flags - {"once", "local"})
        if unknown:
            raise UsageError(f"{path}: unknown selector {sorted(unknown)[0]!r} in its `juncture:` line")
        return Selector(
            local="local" in flags,
            roles=fields.get("roles", ()),
            hosts=fields.get("hosts", ()),
            once="once" in flags,
            containers=fields.get("containers", ()),
            where=path,
        )
    return None
