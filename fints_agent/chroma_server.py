"""A Chroma server with authentication for the memory: ``uvicorn fints_agent.chroma_server:app``.

``chroma run``, the server chromadb 1.5 ships as a command, has no authentication. Chroma's
Python server (``chromadb.app``) has, set up with Chroma's own environment variables:

``CHROMA_SERVER_AUTHN_PROVIDER``
    ``chromadb.auth.token_authn.TokenAuthenticationServerProvider`` (clients send a token) or
    ``chromadb.auth.basic_authn.BasicAuthenticationServerProvider`` (a user and a password).
``CHROMA_SERVER_AUTHN_CREDENTIALS`` (or ``CHROMA_SERVER_AUTHN_CREDENTIALS_FILE``)
    The token; or ``user:bcrypt-hash`` lines (``htpasswd -nbB user password``).
``IS_PERSISTENT=1`` and ``PERSIST_DIRECTORY=DIR``
    Where the data lives.

This module is that server, with one fix: in chromadb 1.5 its ``get`` and ``query`` endpoints
answer HTTP 500 (``'list' object has no attribute 'tolist'``) whenever they return stored
embeddings, because the storage under them hands embeddings over as lists, and a memory reads
its steering vectors exactly that way. Here they are handed over as float32 arrays, which the
endpoints turn into the same JSON numbers (vectors still come back bit-exact).

It needs FastAPI: ``pip install "fints-agent[server]"``. The memory connects with its token
(``$FINTS_AGENT_CHROMA_TOKEN``) or with ``http://USER:PASSWORD@host:port`` (see
:func:`fints_agent.memory.chroma.open_client`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["app", "embeddings_as_arrays"]


def embeddings_as_arrays() -> None:
    """Make the storage under Chroma's Python server return embeddings as float32 arrays (what
    its endpoints expect). Idempotent."""
    from chromadb.api.rust import RustBindingsAPI

    if getattr(RustBindingsAPI, "_fints_arrays", False):
        return
    get, query = RustBindingsAPI._get, RustBindingsAPI._query

    def _get(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = get(self, *args, **kwargs)
        embeddings: Any = result.get("embeddings")
        if embeddings is not None:
            result["embeddings"] = [_array(e) for e in embeddings]
        return result

    def _query(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = query(self, *args, **kwargs)
        embeddings: Any = result.get("embeddings")
        if embeddings is not None:
            result["embeddings"] = [[_array(e) for e in row] for row in embeddings]
        return result

    RustBindingsAPI._get = _get  # type: ignore[method-assign]
    RustBindingsAPI._query = _query  # type: ignore[method-assign]
    RustBindingsAPI._fints_arrays = True  # type: ignore[attr-defined]


def _array(embedding: Any) -> Any:
    return None if embedding is None else np.asarray(embedding, dtype=np.float32)


embeddings_as_arrays()

from chromadb.app import app  # noqa: E402  (the server reads its settings from the environment)
