"""The steering core: activation sites, capture, contrastive vectors and injection."""

from fints_agent.steering.capture import capture_answer_means
from fints_agent.steering.contrast import contrastive_vectors
from fints_agent.steering.demonstration import demonstration_vectors
from fints_agent.steering.inject import Coefficients, SteeringHandle, SteeringRow, steer
from fints_agent.steering.layers import (
    SITES,
    LayerSites,
    Site,
    SiteLayout,
    UnknownLayoutError,
    find_sites,
)
from fints_agent.steering.vector import SteeringVector, VectorMismatchError

__all__ = [
    "SITES",
    "Coefficients",
    "LayerSites",
    "Site",
    "SiteLayout",
    "SteeringHandle",
    "SteeringRow",
    "SteeringVector",
    "UnknownLayoutError",
    "VectorMismatchError",
    "capture_answer_means",
    "contrastive_vectors",
    "demonstration_vectors",
    "find_sites",
    "steer",
]
