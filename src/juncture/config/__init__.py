"""Project configuration: `juncture.yaml` loaded with located errors."""

from __future__ import annotations

from ..errors import ConfigError
from .schema import DEFAULT_HOOKS_PATH, Config, parse_config
from .yamlfile import Located, load_yaml

__all__ = ["CONFIG_NAME", "DEFAULT_HOOKS_PATH", "Config", "Located", "load_config"]

CONFIG_NAME = "juncture.yaml"


def load_config(file: str, root: str) -> Config:
    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(file, None, (), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, None, (), "not UTF-8 text") from None
    return parse_config(load_yaml(file, text), root)
