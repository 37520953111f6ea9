"""Find the decoder layers of a causal LM and, in each, its attention and MLP output modules.

Known layouts cover the Llama, Qwen2, Mistral, Phi-3, Gemma and GPT-2 families (and the many
models that copy their module names). Any other layout can be given explicitly with a
:class:`SiteLayout`; an unknown one fails with an error naming the model class.

Example:
    >>> sites = find_sites(model)
    >>> len(sites.layers), sites.module(3, "mlp")
    >>> find_sites(model, SiteLayout("backbone.blocks", attn="mixer", mlp="ffn"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

Site = Literal["attn", "mlp"]
"""An activation site inside a decoder layer: the attention output or the MLP output."""

SITES: tuple[Site, ...] = ("attn", "mlp")

__all__ = ["SITES", "LayerSites", "Site", "SiteLayout", "UnknownLayoutError", "find_sites"]


class UnknownLayoutError(ValueError):
    """The model's module layout is not one of the known ones and no override was given."""


@dataclass(frozen=True)
class SiteLayout:
    """Where the decoder layers and their sites live, as dotted module paths.

    Attributes:
        layers: Path of the ``ModuleList`` of decoder layers, e.g. ``"model.layers"``.
        attn: Path of the attention module inside one layer, e.g. ``"self_attn"``.
        mlp: Path of the MLP module inside one layer, e.g. ``"mlp"``.
    """

    layers: str
    attn: str
    mlp: str


KNOWN_LAYOUTS: tuple[SiteLayout, ...] = (
    # Llama, Qwen2/3, Mistral, Mixtral, Phi-3, Gemma 1-3, SmolLM, OLMo, Granite...
    SiteLayout("model.layers", attn="self_attn", mlp="mlp"),
    # GPT-2, GPT-J style
    SiteLayout("transformer.h", attn="attn", mlp="mlp"),
    # Gemma 3 multimodal wrappers and similar
    SiteLayout("model.language_model.layers", attn="self_attn", mlp="mlp"),
    # GPT-NeoX / Pythia
    SiteLayout("gpt_neox.layers", attn="attention", mlp="mlp"),
    # Falcon
    SiteLayout("transformer.h", attn="self_attention", mlp="mlp"),
)


@dataclass(frozen=True)
class LayerSites:
    """The decoder layers of one model and their attention and MLP modules.

    Attributes:
        layout: The layout that matched.
        layers: The decoder layer modules, in order.
        attn: The attention module of each layer.
        mlp: The MLP module of each layer.
    """

    layout: SiteLayout
    layers: tuple[nn.Module, ...]
    attn: tuple[nn.Module, ...]
    mlp: tuple[nn.Module, ...]

    def __len__(self) -> int:
        return len(self.layers)

    def module(self, layer: int, site: Site) -> nn.Module:
        """The module whose output is the given site of the given layer.

        Raises:
            IndexError: ``layer`` is out of range.
            ValueError: ``site`` is not ``"attn"`` or ``"mlp"``.
        """
        check_layers([layer], len(self.layers))
        if site == "attn":
            return self.attn[layer]
        if site == "mlp":
            return self.mlp[layer]
        raise ValueError(f"unknown site {site!r}; sites are {SITES}")


def check_layers(layers: list[int] | tuple[int, ...], num_layers: int) -> None:
    """Raise ``IndexError`` with a clear message if a layer index is out of range."""
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layer indices must be ints, got {layer!r}")
        if not 0 <= layer < num_layers:
            raise IndexError(f"layer {layer} out of range: the model has {num_layers} layers")


def check_sites(sites: Sequence[str]) -> None:
    """Raise ``ValueError`` if a site name is unknown or repeated."""
    for site in sites:
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}; sites are {SITES}")
    if len(set(sites)) != len(sites):
        raise ValueError(f"repeated site in {sites!r}")


def _get(root: nn.Module, path: str) -> nn.Module | None:
    node: nn.Module = root
    for part in path.split("."):
        child = getattr(node, part, None)
        if not isinstance(child, nn.Module):
            return None
        node = child
    return node


def _match(model: nn.Module, layout: SiteLayout) -> LayerSites | None:
    container = _get(model, layout.layers)
    if not isinstance(container, nn.ModuleList) or len(container) == 0:
        return None
    attn = [_get(layer, layout.attn) for layer in container]
    mlp = [_get(layer, layout.mlp) for layer in container]
    if any(m is None for m in attn) or any(m is None for m in mlp):
        return None
    return LayerSites(
        layout=layout,
        layers=tuple(container),
        attn=tuple(m for m in attn if m is not None),
        mlp=tuple(m for m in mlp if m is not None),
    )


def find_sites(model: nn.Module, layout: SiteLayout | None = None) -> LayerSites:
    """Locate the decoder layers and their attention and MLP modules.

    Args:
        model: A Hugging Face decoder-only model (or any ``nn.Module``).
        layout: An explicit layout for models whose module names are not known.

    Raises:
        UnknownLayoutError: No known layout matches (or the given one does not).
    """
    candidates = (layout,) if layout is not None else KNOWN_LAYOUTS
    for candidate in candidates:
        found = _match(model, candidate)
        if found is not None:
            return found
    name = type(model).__name__
    if layout is not None:
        raise UnknownLayoutError(f"layout {layout} does not match the modules of {name}")
    raise UnknownLayoutError(
        f"cannot find decoder layers with attention and MLP modules in {name}; pass "
        "SiteLayout(layers=..., attn=..., mlp=...) naming its module paths"
    )
