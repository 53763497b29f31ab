"""Where hooks run. This issue has the local target; SSH and containers follow."""

from __future__ import annotations

from .local import LocalProcess

__all__ = ["LocalProcess"]
