"""Project configuration: `juncture.yaml` loaded with located errors."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .cache import load_cached, store
from .located import Located
from .schema import DEFAULT_HOOKS_PATH, Config, parse_config

__all__ = ["CONFIG_NAME", "DEFAULT_HOOKS_PATH", "Config", "Located", "load_config"]

CONFIG_NAME = "juncture.yaml"


def load_config(file: str, root: str) -> Config:
    cache = os.path.join(root, ".juncture", "state", "config.cache")
    try:
        with open(file, encoding="utf-8") as handle:
            st = os.fstat(handle.fileno())
            doc = load_cached(cache, file, st)
            if doc is None:
                from .yamlfile import load_yaml

                doc = load_yaml(file, handle.read())
                store(cache, st, doc)
    except OSError as exc:
        raise ConfigError(file, None, (), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, None, (), "not UTF-8 text") from None
    return parse_config(doc, root)
