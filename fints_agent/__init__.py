"""fints_agent: per-user activation steering for LangChain tool-calling agents (Fints).

The public names below are imported on first use, so that ``import fints_agent`` (and the
``fints-agent`` command's ``--help``) does not load torch or transformers.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.chat_model import FintsChatModel
    from fints_agent.config import SteeringConfig
    from fints_agent.engine import TurnEngine, TurnRequest, TurnResult
    from fints_agent.models import (
        DEFAULT_MODEL,
        LoadedModel,
        ModelLoadError,
        load_model,
        wrap_model,
    )
    from fints_agent.steering import (
        SITES,
        SiteLayout,
        SteeringVector,
        UnknownLayoutError,
        VectorMismatchError,
        capture_answer_means,
        contrastive_vectors,
        find_sites,
        steer,
    )

try:
    __version__ = version("fints-agent")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS: dict[str, str] = {
    "FintsChatModel": "fints_agent.chat_model",
    "SteeringConfig": "fints_agent.config",
    "TurnEngine": "fints_agent.engine",
    "TurnRequest": "fints_agent.engine",
    "TurnResult": "fints_agent.engine",
    "DEFAULT_MODEL": "fints_agent.models",
    "LoadedModel": "fints_agent.models",
    "ModelLoadError": "fints_agent.models",
    "load_model": "fints_agent.models",
    "wrap_model": "fints_agent.models",
    "SITES": "fints_agent.steering",
    "SiteLayout": "fints_agent.steering",
    "SteeringVector": "fints_agent.steering",
    "UnknownLayoutError": "fints_agent.steering",
    "VectorMismatchError": "fints_agent.steering",
    "capture_answer_means": "fints_agent.steering",
    "contrastive_vectors": "fints_agent.steering",
    "find_sites": "fints_agent.steering",
    "steer": "fints_agent.steering",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "DEFAULT_MODEL",
    "SITES",
    "FintsChatModel",
    "LoadedModel",
    "ModelLoadError",
    "SiteLayout",
    "SteeringConfig",
    "SteeringVector",
    "TurnEngine",
    "TurnRequest",
    "TurnResult",
    "UnknownLayoutError",
    "VectorMismatchError",
    "__version__",
    "capture_answer_means",
    "contrastive_vectors",
    "find_sites",
    "load_model",
    "steer",
    "wrap_model",
]
