"""A memory on a Chroma server with authentication: tokens, basic authentication, tenants.

The server is Chroma's Python server as the docs run it (``uvicorn fints_agent.chroma_server:app``,
Chroma's own authentication providers), started here on loopback with
``CHROMA_SERVER_AUTHN_PROVIDER`` and ``CHROMA_SERVER_AUTHN_CREDENTIALS``: of the servers that
chromadb ships, it is the one that enforces authentication (``chroma run`` has no such option).
A token or password must never show: not in errors, reprs, logs or serialized models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from chroma_servers import BASIC_AUTHN, TOKEN_AUTHN, ChromaServer
from langchain_core.load import dumpd
from memory_fixtures import WEATHER_TOOL, HashEmbedder, tiny, weather_item
from tiny import saved_tiny_smol

from fints_agent.chat_model import FintsChatModel
from fints_agent.config import RetrievalConfig, SteeringConfig
from fints_agent.memory import Memory, StoreAuthError, StoreError, TrajectoryStore
from fints_agent.memory.chroma import TOKEN_ENV, redact_location
from fints_agent.memory.cli import main

TOKEN = "fints-test-token-7Qx"
PASSWORD = "pw-Zk81-secret"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from saved_tiny_smol(tmp_path_factory, "tiny-auth")


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A Chroma server that requires ``TOKEN`` (``Authorization: Bearer ...``)."""
    env = {"CHROMA_SERVER_AUTHN_PROVIDER": TOKEN_AUTHN, "CHROMA_SERVER_AUTHN_CREDENTIALS": TOKEN}
    server = ChromaServer.python(tmp_path_factory.mktemp("token-server"), env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def basic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A Chroma server with basic authentication: user ``ann``, password ``PASSWORD``."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    env = {
        "CHROMA_SERVER_AUTHN_PROVIDER": BASIC_AUTHN,
        "CHROMA_SERVER_AUTHN_CREDENTIALS": f"ann:{hashed}",
    }
    server = ChromaServer.python(tmp_path_factory.mktemp("basic-server"), env).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _chain(exc: BaseException) -> str:
    """The messages of an error and of every error behind it."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{seen!r} {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_no_token_is_refused_with_a_clear_error(token_server: ChromaServer) -> None:
    with pytest.raises(StoreAuthError, match="refused access: no token or password") as err:
        TrajectoryStore(token_server.url)
    assert isinstance(err.value, StoreError)
    assert TOKEN_ENV in str(err.value)


def test_a_wrong_token_is_refused_and_never_shown(
    token_server: ChromaServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-Hq3"
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(StoreAuthError, match="token given was refused") as err,
    ):
        TrajectoryStore(token_server.url, token=wrong)
    assert wrong not in _chain(err.value)
    monkeypatch.setenv(TOKEN_ENV, wrong)
    with pytest.raises(StoreAuthError, match="token given was refused") as err:
        TrajectoryStore(token_server.url)
    assert wrong not in _chain(err.value)
    with pytest.raises(StoreAuthError, match="malformed"):
        TrajectoryStore(token_server.url, token="t\u00f6ken")
    assert wrong not in caplog.text


def test_the_right_token_steers_a_turn(tiny_dir: Path, token_server: ChromaServer) -> None:
    """A chat model with a memory on the server: history recorded, the next turn steered."""
    llm = FintsChatModel(
        model=str(tiny_dir),
        memory=token_server.url,
        memory_token=TOKEN,
        max_tokens=80,
        steering=SteeringConfig(coefficient=50.0, gate="all"),
        retrieval=RetrievalConfig(min_similarity=0.3),
    )
    for city in ("Oslo", "Paris", "Rome"):
        llm.record_feedback(
            "alice",
            [{"role": "user", "content": f"What's the weather in {city}?"}],
            [WEATHER_TOOL],
            {"name": "get_weather", "arguments": {"city": city, "units": "fahrenheit"}},
            [{"name": "get_weather", "arguments": {"city": city, "units": "celsius"}}],
        )
    assert llm.get_memory().store.count("alice") == 3
    bound = llm.bind_tools([WEATHER_TOOL], tool_choice="any")
    msg = bound.invoke("What's the weather in Berlin?", user_id="alice")
    info = msg.response_metadata["fints"]
    assert info["steered"] and len(info["trajectories"]) == 3
    assert msg.tool_calls
    # The token shows nowhere: not in the model's repr, nor its serialized form.
    assert TOKEN not in repr(llm) and TOKEN not in str(llm)
    assert TOKEN not in json.dumps(dumpd(llm))
    assert TOKEN not in repr(llm.get_memory()) and TOKEN not in repr(llm.get_memory().store)
    # Without the token, a turn for a user fails clearly (a refused token is not an outage).
    plain = FintsChatModel(model=str(tiny_dir), memory=token_server.url, max_tokens=8)
    with pytest.raises(StoreAuthError):
        plain.invoke("What's the weather in Berlin?", user_id="alice")


def test_token_from_the_environment_and_tenants(
    token_server: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$FINTS_AGENT_CHROMA_TOKEN`` authenticates; a tenant and database keep a memory of
    their own on the server."""
    import chromadb
    from chromadb.config import Settings

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host="127.0.0.1",
            chroma_server_http_port=token_server.port,
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=TOKEN,
            anonymized_telemetry=False,
        )
    )
    admin.create_tenant("team-a")
    admin.create_database("memories", tenant="team-a")
    memory = Memory(
        tiny(), token_server.url, embedder=HashEmbedder(), tenant="team-a", database="memories"
    )
    memory.record_many([weather_item("carol", i) for i in range(2)], progress=False)
    assert memory.store.count("carol") == 2
    elsewhere = TrajectoryStore(token_server.url, collection_prefix="fints")
    assert elsewhere.count("carol") == 0
    with pytest.raises(StoreError, match="no tenant 'nobody'"):
        TrajectoryStore(token_server.url, tenant="nobody")


def test_memory_commands_take_the_token(
    token_server: ChromaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = token_server.url
    assert main(["stats", "--store", url]) == 2
    err = capsys.readouterr().err
    assert "refused access" in err
    assert main(["stats", "--store", url, "--token", "wrong-Pz9"]) == 2
    assert "wrong-Pz9" not in capsys.readouterr().err
    assert main(["stats", "--store", url, "--token", TOKEN, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["location"] == url and TOKEN not in out
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert main(["stats", "--store", url, "--tenant", "team-a", "--database", "memories"]) == 0
    assert main(["list", "nobody", "--store", url, "--tenant", "nobody"]) == 2
    assert "no tenant 'nobody'" in capsys.readouterr().err


def test_url_credentials_are_used_for_basic_authentication(basic_server: ChromaServer) -> None:
    with_user = basic_server.url.replace("http://", f"http://ann:{PASSWORD}@")
    store = TrajectoryStore(with_user)
    assert store.users() == []
    shown = basic_server.url.replace("http://", "http://ann:***@")
    assert store.location == shown and store.stats()["location"] == shown
    assert PASSWORD not in repr(store)
    with pytest.raises(StoreAuthError, match="user and password were refused") as err:
        TrajectoryStore(basic_server.url.replace("http://", "http://ann:nope-Xq@"))
    assert "nope-Xq" not in _chain(err.value)
    with pytest.raises(StoreAuthError, match="no token or password"):
        TrajectoryStore(basic_server.url)
    with pytest.raises(StoreAuthError, match="and a token is given too") as err:
        TrajectoryStore(with_user, token=TOKEN)
    assert PASSWORD not in _chain(err.value) and TOKEN not in _chain(err.value)


def test_credentials_that_cannot_be_used_are_refused(tmp_path: Path) -> None:
    """Checked before anything is reached: nothing is silently dropped."""
    with pytest.raises(StoreAuthError, match="needs a user"):
        TrajectoryStore("http://ann@127.0.0.1:9")
    with pytest.raises(StoreAuthError, match="needs a user"):
        TrajectoryStore("http://:secret-pw@127.0.0.1:9")
    with pytest.raises(StoreAuthError, match="is a directory"):
        TrajectoryStore(tmp_path / "store", token=TOKEN)
    assert redact_location("http://ann:p%40ss@h:8000/x") == "http://ann:***@h:8000/x"
    assert redact_location("https://h:8000") == "https://h:8000"
    assert redact_location(tmp_path) == str(tmp_path)


def test_a_directory_ignores_the_token_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    store = TrajectoryStore(tmp_path / "store")
    assert store.users() == []
    store.close()
