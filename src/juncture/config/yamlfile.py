"""Read a YAML file into plain data plus the line of every key path, for located errors."""

from __future__ import annotations

import re

import yaml

from ..errors import ConfigError
from .located import Located

__all__ = ["Located", "load_yaml"]

try:  # libyaml is much faster; fall back where PyYAML was built without it
    from yaml import CSafeLoader as _Base
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Base  # type: ignore[assignment]

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
MAX_NODES = 100_000  # values in a file once aliases are expanded (a "billion laughs" has 10**9)
MAX_DEPTH = 100  # levels of nesting, aliases expanded
MAX_DIGITS = 64  # characters of an integer (a longer one is refused: quote it to make it text)


class _Loader(_Base):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads `on`, `yes`, `no`, `off` as booleans,
    which would turn a task's `on:` key into True (the Norway problem)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _bounded_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_DIGITS:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"an integer of {len(node.value)} characters (at most {MAX_DIGITS}; quote it to make it text)",
            node.start_mark,
        )
    value: int = loader.construct_yaml_int(node)
    return value


_Loader.add_constructor(_INT, _bounded_int)


def load_yaml(file: str, text: str) -> Located:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[str, ...], int] = {}
        if node is not None:
            _check_graph(file, node)
            # Before construction: it folds merge keys (`<<: *base`) into the mapping, and a key that
            # overrides a merged one would then look like a duplicate.
            lines[()] = node.start_mark.line + 1
            _index(file, node, (), lines)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, (), f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, (), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return Located(file, data, lines)


def _index(file: str, node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = (*path, key)
            if key in seen:
                raise ConfigError(file, key_node.start_mark.line + 1, sub, "duplicate key")
            seen.add(key)
            lines[sub] = key_node.start_mark.line + 1
            _index(file, value_node, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            lines[sub] = item.start_mark.line + 1
            _index(file, item, sub, lines)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(file: str, root: yaml.Node) -> None:
    """Refuse what aliases can make of a small file: a structure that contains itself (`a: &a [*a]`),
    more than MAX_NODES values once expanded, nesting deeper than MAX_DEPTH. Each node is visited
    once (an alias is the node it names), so this takes time in the file's size, not the expansion's."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if done:
            open_nodes.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[key] > MAX_NODES:
                raise ConfigError(file, line, (), f"more than {MAX_NODES} values once aliases are expanded")
            if depth[key] > MAX_DEPTH:
                raise ConfigError(file, line, (), f"nested more than {MAX_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(file, line, (), "an alias inside the value it names (a recursive structure)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
