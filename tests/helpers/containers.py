"""A throw-away container of kind `app`, for a test module."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servers import Podman


@contextmanager
def app_container(podman: Podman, prefix: str) -> Iterator[tuple[Podman, str]]:
    """A running container named `PREFIX-RANDOM` labelled kind `app`, removed afterwards."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    podman.run(name, "juncture.test.kind=app")
    try:
        yield podman, name
    finally:
        podman.remove(name)
