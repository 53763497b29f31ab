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


class _Loader(_Base):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads `on`, `yes`, `no`, `off` as booleans,
    which would turn a task's `on:` key into True (the Norway problem)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(file: str, text: str) -> Located:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, (), f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, (), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _index(file, node, (), lines)
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
