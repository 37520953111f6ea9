"""The store's Chroma client and collections: where each part of a trajectory is kept, and why.

A store lives in a local directory (embedded ``chromadb.PersistentClient``) or on a Chroma
server (``chromadb.HttpClient``; start one with ``chroma run --path DIR --host 127.0.0.1 --port
N``): :func:`open_client` picks by the location, a path or an ``http(s)://host:port`` URL, and
everything else is the same code. Embeddings are always passed in; Chroma's default embedding
function (which downloads a model) is never used.

A server with authentication takes a token (``$FINTS_AGENT_CHROMA_TOKEN``) or a user and
password in the URL (see :func:`open_client`); tenants and databases are Chroma's. Every handle
given out is a :class:`Handle`: while the server cannot be reached its calls raise
:class:`~fints_agent.memory.errors.StoreUnavailableError` (never a raw ``httpx`` error), a
refused token :class:`~fints_agent.memory.errors.StoreAuthError`, and a collection that vanished
(another process deleted it, or the server restarted on an empty directory) is re-resolved by
name once, so that cached handles never fail for good.

Collections (``P`` is the prefix, ``K`` the first 32 hex digits of SHA-256 of the user id):

``P-meta``
    No records; its metadata is the :class:`~fints_agent.memory.layout.StoreLayout` (model
    fingerprint, layers, sites, ``d_model``, retrieval embedder). Vectors of another model are
    refused.
``P-t-K``
    One collection per user, queried by similarity: per trajectory, the request's retrieval
    embedding (cosine space), the request text, the chosen call, time, turn number and
    supersession marks.
``P-vectors``
    The steering vectors of all users, keyed by trajectory id: the flat float32 vector (layers x
    sites x d_model: 34,560 values for the default model) *as the record's embedding*, which
    Chroma stores as float32, so vectors come back bit-exact; plus the user id and the rest of
    the trajectory (messages, offered tools, rejected calls) as metadata. It is only read by id,
    so its HNSW graph is built with the smallest settings (``max_neighbors=2``,
    ``ef_construction=4``).
``P-pop``
    One small record per trajectory of every user (retrieval embedding, tool name and the enum and
    boolean argument values; no free text): other users' choices for similar requests, used to
    build negatives.
``P-journal``
    Write intents, for crash recovery (see :mod:`~fints_agent.memory.journal`).

Measurements behind these choices (2-core CPU, chromadb 1.5.9):

* Vectors as embeddings with the smallest HNSW settings ingest at ~290/s for 34,560 values
  (~140/s with the default settings) and take ~140 KB each in the index. Base64 text ingests at
  ~10/s as a document (the full-text index tokenizes it) and ~100/s in metadata at 4x the disk
  (the metadata index and the write log each keep a copy). Reading back 5 vectors by id costs
  ~10 ms, mostly turning 170,000 floats into Python objects in the client.
* One *shared* vector collection: an HNSW index reserves room for 100 vectors when created
  (13.8 MB at 34,560 values), so one vector collection per user would cost ~14 MB for a user
  with a single trajectory.
* One trajectory collection *per user*: Chroma's filtered queries (``where={"user_id": ...}``)
  took 12-70 ms in a store of 1,000 users and 20,000 trajectories, an unfiltered query of the
  user's own collection 1.3-2 ms. Isolation is structural, and every result is still checked to
  carry the user's id (vectors too).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from fints_agent.memory.errors import StoreAuthError, StoreError, StoreUnavailableError

__all__ = [
    "PREFIX_PATTERN",
    "TOKEN_ENV",
    "Collections",
    "GuardedClient",
    "Handle",
    "is_not_found",
    "open_client",
    "redact_location",
    "secret_text",
    "store_error",
    "user_key",
]

PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
"""What a collection prefix must look like."""
TOKEN_ENV = "FINTS_AGENT_CHROMA_TOKEN"
"""Environment variable holding the token of a Chroma server with token authentication."""
_VECTOR_HNSW = {"ef_construction": 4, "max_neighbors": 2, "ef_search": 1}
_TOKEN_PROVIDER = "chromadb.auth.token_authn.TokenAuthClientProvider"
_BASIC_PROVIDER = "chromadb.auth.basic_authn.BasicAuthClientProvider"


def open_client(
    location: str | Path,
    *,
    token: Any = None,
    tenant: str | None = None,
    database: str | None = None,
) -> Any:
    """A Chroma client for a directory (embedded) or an ``http(s)://host:port`` URL (server).

    A server with authentication takes a token (token authentication: sent as ``Authorization:
    Bearer ...``, or in the header ``$CHROMA_AUTH_TOKEN_TRANSPORT_HEADER`` names) or a user and
    password in the URL, ``http://USER:PASSWORD@host:port`` (basic authentication). Neither is
    ever shown: not in errors, not in the store's ``repr``.

    Args:
        location: A directory, or the URL of a Chroma server.
        token: The server's token, a string or a pydantic ``SecretStr`` (default:
            ``$FINTS_AGENT_CHROMA_TOKEN``, for a URL without a user and password).
        tenant: The Chroma tenant (default: Chroma's ``default_tenant``); it must exist.
        database: The Chroma database of the tenant (default: ``default_database``); it must
            exist.

    Raises:
        StoreAuthError: The server refused the credentials (none given, or wrong ones), or they
            cannot be used: a token and a URL password both, a URL user without a password, a
            malformed token, a token for a directory.
        StoreUnavailableError: The server does not answer.
        StoreError: A malformed URL, a tenant or database that does not exist, a directory
            that cannot be opened.
    """
    import chromadb
    from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

    text = str(location)
    shown = redact_location(text)
    where = {"tenant": tenant or DEFAULT_TENANT, "database": database or DEFAULT_DATABASE}
    if text.startswith(("http://", "https://")):
        url = urlsplit(text)
        if not url.hostname:
            raise StoreError(f"no host in store URL {shown!r}")
        auth = _client_auth(url, secret_text(token), shown)
        settings = Settings(anonymized_telemetry=False)
        if auth:  # else Chroma's own CHROMA_CLIENT_AUTH_* variables still apply
            settings.chroma_client_auth_provider = auth["chroma_client_auth_provider"]
            settings.chroma_client_auth_credentials = auth["chroma_client_auth_credentials"]
        ssl = url.scheme == "https"
        try:
            port = url.port or (443 if ssl else 8000)
            client = chromadb.HttpClient(
                host=url.hostname,
                port=port,
                ssl=ssl,
                settings=settings,
                tenant=where["tenant"],
                database=where["database"],
            )
            client.heartbeat()
        except Exception as exc:
            raise _open_error(exc, shown, auth, where) from exc
        return client
    if "://" in text:
        raise StoreError(f"unsupported store URL {shown!r}: use a path or http(s)://host:port")
    if secret_text(token) is not None:
        raise StoreAuthError(
            f"a token is for a Chroma server; store location {shown} is a directory"
        )
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"store location {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(
            path=str(path),
            settings=Settings(anonymized_telemetry=False),
            tenant=where["tenant"],
            database=where["database"],
        )
    except Exception as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from exc


def secret_text(value: Any) -> str | None:
    """The text of a secret given as a string or a pydantic ``SecretStr`` (None when empty)."""
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    text = str(reveal() if callable(reveal) else value)
    return text or None


def redact_location(location: str | Path) -> str:
    """A store location as it may be shown: the password of a URL replaced by ``***``."""
    text = str(location)
    if "://" not in text:
        return text
    url = urlsplit(text)
    if "@" not in url.netloc:
        return text
    userinfo, host = url.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(url._replace(netloc=f"{user}:***@{host}"))


def _client_auth(url: SplitResult, token: str | None, shown: str) -> dict[str, str]:
    """The Chroma client settings that authenticate to the server of ``url``."""
    if "@" in url.netloc:
        if token is not None:
            raise StoreAuthError(
                f"store URL {shown} has a user and password, and a token is given too: use one "
                "(the URL's for basic authentication, or the token)"
            )
        user, password = unquote(url.username or ""), unquote(url.password or "")
        if not user or not password or ":" in user:
            raise StoreAuthError(
                f"store URL {shown}: basic authentication needs a user (without ':') and a "
                "password, http(s)://USER:PASSWORD@host:port"
            )
        return {
            "chroma_client_auth_provider": _BASIC_PROVIDER,
            "chroma_client_auth_credentials": f"{user}:{password}",
        }
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None:
        return {}
    return {"chroma_client_auth_provider": _TOKEN_PROVIDER, "chroma_client_auth_credentials": token}


def _open_error(
    exc: BaseException, shown: str, auth: dict[str, str], where: dict[str, str]
) -> StoreError:
    """The store's error for a server that could not be opened."""
    err = store_error(exc, shown)
    if isinstance(err, StoreAuthError):
        sent = {
            _TOKEN_PROVIDER: "the token given was refused",
            _BASIC_PROVIDER: "the URL's user and password were refused",
        }.get(auth.get("chroma_client_auth_provider", ""), "no token or password was given")
        return StoreAuthError(
            f"the Chroma server at {shown} refused access: {sent}. Give its token "
            f"(${TOKEN_ENV}, or the token option) or http(s)://USER:PASSWORD@host:port"
        )
    if err is not None:
        return err
    if isinstance(exc, ValueError) and "Invalid token" in str(exc):
        return StoreAuthError(
            "the Chroma token is malformed: only ASCII letters, digits and punctuation"
        )
    if is_not_found(exc) or "not found" in str(exc).lower():
        return StoreError(
            f"no tenant {where['tenant']!r} with database {where['database']!r} on the Chroma "
            f"server at {shown} (create them with chromadb.AdminClient): {exc}"
        )
    return StoreError(f"cannot open the Chroma server at {shown}: {exc}")


def store_error(exc: BaseException, where: str) -> StoreError | None:
    """The store's error for a failure of a Chroma client call: :class:`StoreUnavailableError`
    when the server cannot be reached, :class:`StoreAuthError` when it refuses the credentials,
    the error itself when it is a store error already, ``None`` for anything else.

    Args:
        exc: What the Chroma client raised.
        where: The store location, as shown in messages (see :func:`redact_location`).
    """
    import httpx
    from chromadb.errors import AuthorizationError, ChromaAuthError

    if isinstance(exc, StoreError):
        return exc
    server = f"the Chroma server at {where}" if where else "the Chroma server"
    if isinstance(exc, httpx.TransportError) or (
        isinstance(exc, ValueError) and "Could not connect to a Chroma server" in str(exc)
    ):
        return StoreUnavailableError(
            f"{server} cannot be reached ({type(exc).__name__}: {exc}); what it holds is kept"
        )
    refused = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403)
    if refused or isinstance(exc, ChromaAuthError | AuthorizationError):
        return StoreAuthError(f"{server} refused the credentials ({exc})")
    return None


def is_not_found(exc: BaseException) -> bool:
    """Whether a Chroma error says that a collection does not exist."""
    from chromadb.errors import NotFoundError

    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


def user_key(user_id: str) -> str:
    """The user's part of their trajectory collection's name (``K`` above)."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


class GuardedClient:
    """A Chroma client whose calls raise :class:`StoreUnavailableError` when the server cannot
    be reached and :class:`StoreAuthError` when it refuses the credentials (everything else as
    Chroma raises it).

    Args:
        client: The Chroma client.
        where: The store location, as shown in messages.
    """

    def __init__(self, client: Any, where: str = "") -> None:
        self.raw = client
        self.where = where

    def __getattr__(self, attr: str) -> Any:
        if attr in ("raw", "where"):  # not set yet (a copy being made)
            raise AttributeError(attr)
        value = getattr(self.raw, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return guarded(value, self.where, *args, **kwargs)

        return call


def guarded(fn: Callable[..., Any], shown: str, /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, its connection and authentication failures raised as
    :class:`StoreUnavailableError` and :class:`StoreAuthError` (see :func:`store_error`;
    ``shown`` is the store's location as messages show it)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        err = store_error(exc, shown)
        if err is None or err is exc:
            raise
        raise err from exc


class Handle:
    """A collection's handle: Chroma's, with two differences. Connection and authentication
    failures raise :class:`StoreUnavailableError` and :class:`StoreAuthError`; and a call that
    finds the collection gone (another process deleted it, or the server restarted on an empty
    directory) re-resolves it by name once and runs again: a handle opened to write re-creates
    the collection, one opened to read finds it if it exists again (else the ``NotFoundError``
    is raised, which readers take as an empty collection).

    Args:
        collections: Where the handle came from (it re-resolves there).
        name: The collection's name.
        raw: Chroma's collection.
        spec: How it was opened (:meth:`Collections.collection`'s ``create``, ``metadata`` and
            ``configuration``).
    """

    def __init__(self, collections: Collections, name: str, raw: Any, spec: dict[str, Any]) -> None:
        self._collections = collections
        self._name = name
        self._spec = spec
        self.raw = raw

    def __repr__(self) -> str:
        return f"Handle({self._name!r})"

    def __getattr__(self, attr: str) -> Any:
        if attr in ("raw", "_collections", "_name", "_spec"):  # not set yet (a copy being made)
            raise AttributeError(attr)
        value = getattr(self.raw, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, args, kwargs)

        return call

    def _call(self, attr: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        where = self._collections.client.where
        try:
            return guarded(getattr(self.raw, attr), where, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, StoreError) or not is_not_found(exc):
                raise
            again = self._collections.collection(self._name, fresh=True, **self._spec)
            if again is None:
                raise
            self.raw = again.raw
        return guarded(getattr(self.raw, attr), where, *args, **kwargs)


class Collections:
    """A store's collections on one Chroma client: names, cached handles and per-user locks.

    Thread-safe. Handles are cached; every handle given out is a :class:`Handle`, which
    re-resolves a collection that vanished (another process deleted it, or the server
    restarted on an empty directory) once by name, and raises :class:`StoreUnavailableError`
    while the server cannot be reached. A collection still absent counts as absent for readers
    (:meth:`retry_stale` drops its cached handle).

    Args:
        client: An open Chroma client (kept as a :class:`GuardedClient`).
        prefix: The store's collection prefix (``P`` above).
        where: The store's location, as shown in messages (without a password).
    """

    def __init__(self, client: Any, prefix: str, *, where: str = "") -> None:
        self.client = client if isinstance(client, GuardedClient) else GuardedClient(client, where)
        self.prefix = prefix
        self.lock = threading.RLock()
        self._user_locks: dict[str, threading.Lock] = {}
        self._handles: dict[str, Any] = {}

    def name(self, kind: str, user_id: str | None = None) -> str:
        """The name of a collection: ``P-kind``, or ``P-kind-K`` for a user's."""
        if user_id is None:
            return f"{self.prefix}-{kind}"
        return f"{self.prefix}-{kind}-{user_key(user_id)}"

    def user_lock(self, user_id: str) -> threading.Lock:
        """The lock that orders one user's writes (and forgets)."""
        with self.lock:
            return self._user_locks.setdefault(user_id, threading.Lock())

    def collection(
        self,
        name: str,
        *,
        create: bool = False,
        metadata: dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> Any:
        """A collection's :class:`Handle` (``None`` when it does not exist and ``create`` is not
        set).

        Raises:
            StoreUnavailableError: The server cannot be reached.
            StoreAuthError: The server refused the credentials.
            StoreError: The collection cannot be opened or created.
        """
        spec = {"create": create, "metadata": metadata, "configuration": configuration}
        with self.lock:
            if not fresh and name in self._handles:
                return Handle(self, name, self._handles[name], spec)
        try:
            if create:
                col = self.client.get_or_create_collection(
                    name, embedding_function=None, metadata=metadata, configuration=configuration
                )
            else:
                col = self.client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if isinstance(exc, StoreError):
                raise
            if not create and is_not_found(exc):
                with self.lock:
                    self._handles.pop(name, None)
                return None
            raise StoreError(f"cannot open collection {name}: {exc}") from exc
        with self.lock:
            self._handles[name] = col
        return Handle(self, name, col, spec)

    def forget_handle(self, name: str) -> None:
        """Drop a cached handle."""
        with self.lock:
            self._handles.pop(name, None)

    @contextmanager
    def retry_stale(self, *names: str) -> Iterator[None]:
        """Drop cached handles of collections another process may have deleted."""
        try:
            yield
        except Exception as exc:
            if is_not_found(exc):
                for n in names:
                    self.forget_handle(n)
            raise

    def trajectories(self, user_id: str, *, create: bool = False) -> Any:
        """The user's trajectory collection (``P-t-K``)."""
        # Writers always re-open (another process may have deleted the collection since);
        # readers use cached handles and treat a vanished collection as no history.
        return self.collection(
            self.name("t", user_id),
            create=create,
            fresh=create,
            metadata={"user_id": user_id, "next_seq": 0, "kind": "trajectories"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def vectors(self, *, create: bool = False) -> Any:
        """The shared vector collection (``P-vectors``)."""
        return self.collection(
            self.name("vectors"),
            create=create,
            metadata={"kind": "vectors"},
            configuration={"hnsw": {"space": "l2", **_VECTOR_HNSW}},
        )

    def population(self, *, create: bool = False) -> Any:
        """The population collection (``P-pop``)."""
        return self.collection(
            self.name("pop"),
            create=create,
            metadata={"kind": "population"},
            configuration={"hnsw": {"space": "cosine"}},
        )

    def journal(self, *, create: bool = True) -> Any:
        """The journal collection (``P-journal``)."""
        return self.collection(self.name("journal"), create=create, metadata={"kind": "journal"})

    def users(self) -> list[str]:
        """Ids of users with a trajectory collection (possibly empty), sorted.

        Only this store's collections count: ``P-t-`` and a user key, that key being the hash
        of the collection's user id (a store whose prefix extends this one's, such as ``P-t``,
        is another store).
        """
        pattern = re.compile(re.escape(self.name("t")) + r"-([0-9a-f]{32})")
        found = []
        for col in self.client.list_collections():
            name = col if isinstance(col, str) else col.name
            match = pattern.fullmatch(name)
            if match is None:
                continue
            c = col if not isinstance(col, str) else self.collection(name)
            uid = (getattr(c, "metadata", None) or {}).get("user_id")
            if isinstance(uid, str) and user_key(uid) == match.group(1):
                found.append(uid)
        return sorted(found)
