"""The options a chat model is built with: misspelled ones refused with the closest name, a
model object (a transformers model with its tokenizer, or a LoadedModel) registered so that
the chat model loads it by name."""

from __future__ import annotations

import difflib
from typing import Any

from transformers import PreTrainedModel

from fints_agent.models import LoadedModel, register_model, wrap_model

__all__ = ["checked_options"]

_LOADER_OPTIONS = frozenset(
    {"device_map", "quantization_config", "load_in_8bit", "load_in_4bit", "attn_implementation"}
)
"""Options of transformers' ``from_pretrained``: they belong in ``model_kwargs``."""
_IGNORED_OPTIONS = frozenset({"timeout", "max_retries", "streaming", "api_key"})
"""Standard options of LangChain chat models that mean nothing for a local model (no request
to time out, retry or authenticate; streaming is chosen per call): accepted, so that code
written for other chat models runs, and ignored."""


def _hint(option: str, known: set[str]) -> str:
    """An unknown option, with where it belongs or the closest known name."""
    if option in _LOADER_OPTIONS:
        return f"{option!r} (a from_pretrained option: pass it in model_kwargs)"
    close = difflib.get_close_matches(option, sorted(known), n=1)
    return f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def checked_options(data: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The constructor options of a chat model, checked; a model object becomes its registered
    name, dtype and device.

    Raises:
        ValueError: An unknown option (with the closest known name, or where it belongs), a
            tokenizer without a model object, a transformers model without its tokenizer.
    """
    unknown = [k for k in data if k not in known and k not in _IGNORED_OPTIONS | {"tokenizer"}]
    if unknown:
        raise ValueError("unknown options: " + ", ".join(_hint(k, known) for k in unknown))
    data = {k: v for k, v in data.items() if k not in _IGNORED_OPTIONS}
    given = data.get("model", data.get("model_name"))
    tokenizer = data.pop("tokenizer", None)
    if isinstance(given, str) or given is None:
        if tokenizer is not None:
            raise ValueError("tokenizer= goes with a model object, not with a model name")
        return data
    if isinstance(given, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("a transformers model needs its tokenizer: pass tokenizer=")
        given = wrap_model(given, tokenizer, name=str(given.name_or_path or "custom"))
    if not isinstance(given, LoadedModel):
        raise ValueError(
            f"model= takes a name, a local directory, a LoadedModel or a transformers "
            f"model; got {type(given).__name__}"
        )
    data.pop("model_name", None)
    data["model"] = register_model(given)
    data["dtype"] = str(given.dtype).removeprefix("torch.")
    data["device"] = str(given.device)
    return data
