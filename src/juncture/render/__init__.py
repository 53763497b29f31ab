"""How a run is shown: terminal lines or JSON lines."""

from __future__ import annotations

__all__: list[str] = []
