"""One try of a stage's health probes on a host: http and tcp from this machine, a command on the host."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable

from ..config.deploy import Text
from ..config.hosts import Health
from ..plan.templating import render

__all__ = ["probe"]


def probe(health: Health, context: dict[str, object], run: Callable[[str], tuple[int, str]]) -> str:
    """What failed, or "" when every configured probe passed. `run(script)` runs a command on the host."""

    def text(value: str, key: str) -> str:
        return render(Text(value, "juncture.yaml", None, ("health", key)), context)

    if health.http is not None:
        url = text(health.http[0], "http")
        try:
            with urllib.request.urlopen(url, timeout=health.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return f"http {url}: {getattr(exc, 'reason', exc)}"
        if status != health.http[1]:
            return f"http {url}: status {status}, expected {health.http[1]}"
    if health.tcp is not None:
        address = text(health.tcp[0], "tcp")
        try:
            socket.create_connection((address, health.tcp[1]), timeout=health.timeout).close()
        except OSError as exc:
            return f"tcp {address}:{health.tcp[1]}: {exc.strerror or exc}"
    if health.command is not None:
        code, out = run(text(health.command, "command"))
        if code != 0:
            last = out.strip().splitlines()[-1] if out.strip() else ""
            return f"command exited with {code}" + (f": {last}" if last else "")
    return ""
