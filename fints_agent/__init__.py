"""fints_agent: per-user activation steering for LangChain tool-calling agents (Fints).

The names below are what a user touches: the chat model, its options, the memory and its
store, the vector type and the model loader. Everything else stays importable from its module
(see ``docs/architecture.md``). They are imported on first use, so that ``import fints_agent``
(and the ``fints-agent`` command's ``--help``) does not load torch or transformers.

Example:
    >>> from fints_agent import FintsChatModel, RetrievalConfig
    >>> llm = FintsChatModel(memory="./memory", retrieval=RetrievalConfig(recency_half_life=4))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.chat_model import FintsChatModel
    from fints_agent.config import Preset, RetrievalConfig, SteeringConfig, VectorKind
    from fints_agent.memory import Memory, TrajectoryStore
    from fints_agent.models import (
        DEFAULT_MODEL,
        LoadedModel,
        ModelLoadError,
        load_model,
        wrap_model,
    )
    from fints_agent.steering import SteeringVector

try:
    __version__ = version("fints-agent")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS: dict[str, str] = {
    "FintsChatModel": "fints_agent.chat_model",
    "Preset": "fints_agent.config",
    "RetrievalConfig": "fints_agent.config",
    "SteeringConfig": "fints_agent.config",
    "VectorKind": "fints_agent.config",
    "Memory": "fints_agent.memory",
    "TrajectoryStore": "fints_agent.memory",
    "DEFAULT_MODEL": "fints_agent.models",
    "LoadedModel": "fints_agent.models",
    "ModelLoadError": "fints_agent.models",
    "load_model": "fints_agent.models",
    "wrap_model": "fints_agent.models",
    "SteeringVector": "fints_agent.steering",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "DEFAULT_MODEL",
    "FintsChatModel",
    "LoadedModel",
    "Memory",
    "ModelLoadError",
    "Preset",
    "RetrievalConfig",
    "SteeringConfig",
    "SteeringVector",
    "TrajectoryStore",
    "VectorKind",
    "__version__",
    "load_model",
    "wrap_model",
]
