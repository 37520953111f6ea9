"""The user cache directory, in a module of its own so that reading it imports no torch."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "FINTS_AGENT_CACHE"
"""Environment variable naming the user cache directory."""


def cache_dir() -> Path:
    """The user cache directory (``$FINTS_AGENT_CACHE`` or ``~/.cache/fints_agent``)."""
    env = os.environ.get(CACHE_ENV)
    base = Path(env) if env else Path.home() / ".cache" / "fints_agent"
    return base.expanduser()
