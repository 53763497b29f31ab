"""A project: its root directory, its configuration and the events it knows."""

from __future__ import annotations

import os

from ._util.record import record, replace
from .config import CONFIG_NAME, Config, load_config
from .errors import UsageError
from .model.catalogue import BUILT_IN
from .model.event import EventSpec, event_name_problem

__all__ = ["Project", "find_config", "load_project"]


@record
class Project:
    root: str
    config: Config

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, ".juncture")

    def event(self, name: str, override: EventSpec | None = None) -> EventSpec:
        """The options of event `name`: juncture.yaml, else a typed event, else built in, else defaults."""
        problem = event_name_problem(name)
        if problem:
            raise UsageError(problem)
        declared = self.config.events.get(name)
        if declared is not None:
            return declared
        if override is not None:
            return override
        config = self.config
        return replace(BUILT_IN.get(name) or EventSpec(name=name), timeout=config.timeout, grace=config.grace)

    def known(self, name: str) -> bool:
        """Declared, built in, or a custom phase of the deploy pipeline."""
        return name in self.config.events or name in BUILT_IN or name in self.config.deploy.phases


def find_config(start: str) -> str:
    """The juncture.yaml in `start` or the nearest parent directory, as git finds `.git`."""
    if not os.path.isdir(start):
        raise UsageError(f"{start}: not a directory")
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, CONFIG_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            raise UsageError(
                f"no {CONFIG_NAME} in {os.path.abspath(start)} or any parent (run `juncture init`)"
            )
        here = parent


def load_project(directory: str | None = None, config_file: str | None = None) -> Project:
    if config_file is not None:
        if directory is not None and not os.path.isabs(config_file):
            config_file = os.path.join(directory, config_file)
        if not os.path.isfile(config_file):
            raise UsageError(f"{config_file}: no such configuration file")
        file = os.path.abspath(config_file)
    else:
        file = find_config(directory or os.curdir)
    root = os.path.dirname(file)
    return Project(root=root, config=load_config(file, root))
