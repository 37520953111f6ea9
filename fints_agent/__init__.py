"""fints_agent: per-user activation steering for LangChain tool-calling agents (Fints)."""

from fints_agent.chat_model import FintsChatModel
from fints_agent.config import SteeringConfig
from fints_agent.engine import TurnEngine, TurnRequest, TurnResult
from fints_agent.models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model, wrap_model
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

__version__ = "0.1.0"

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
