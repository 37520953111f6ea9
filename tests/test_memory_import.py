"""Export and import of a user's memory: checked, single-user and all or nothing (real embedded
Chroma in temporary directories)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from memory_fixtures import make_memory, new_prefix, weather_item

from fints_agent.memory import Memory, StoreError, TrajectoryStore
from fints_agent.memory.cli import main
from fints_agent.memory.transfer import EXPORT_VERSION

pytestmark = pytest.mark.usefixtures("one_thread")


def _recorded(location: Path, users: dict[str, int]) -> tuple[Memory, dict[str, list[str]]]:
    memory = make_memory(location)
    items = [weather_item(user, i) for user, n in users.items() for i in range(n)]
    ids = memory.record_many(items, progress=False)
    by_user: dict[str, list[str]] = {}
    for item, tid in zip(items, ids, strict=True):
        by_user.setdefault(item["user_id"], []).append(tid)
    return memory, by_user


def _lines(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *records = (json.loads(line) for line in path.read_text().splitlines())
    return header, records


def _write(
    path: Path,
    header: dict[str, Any],
    records: list[dict[str, Any]],
    *,
    checksum: bool = True,
) -> None:
    """An export file as a careful forger writes it: the checksum recomputed (or left out)."""
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    header = {k: v for k, v in header.items() if k != "checksum"}
    if checksum:
        header["checksum"] = "sha256:" + hashlib.sha256(body).hexdigest()
    path.write_bytes((json.dumps(header) + "\n").encode() + body)


def _journal(store: TrajectoryStore) -> list[str]:
    journal = store.collections.journal(create=False)
    return [] if journal is None else list(journal.get()["ids"])


def _vector_owners(store: TrajectoryStore, ids: list[str]) -> dict[str, str]:
    got = store.collections.vectors().get(ids=ids, include=["metadatas"])
    return {tid: m["user_id"] for tid, m in zip(got["ids"], got["metadatas"], strict=True)}


def test_export_header_has_count_and_checksum(tmp_path: Path) -> None:
    memory, ids = _recorded(tmp_path / "s", {"alice": 3})
    path = tmp_path / "alice.jsonl"
    assert memory.export_user("alice", path) == 3
    header, records = _lines(path)
    body = path.read_bytes().split(b"\n", 1)[1]
    assert header["version"] == EXPORT_VERSION and header["count"] == 3
    assert header["checksum"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert [r["id"] for r in records] == ids["alice"]


def test_records_of_another_user_are_refused(tmp_path: Path) -> None:
    memory, ids = _recorded(tmp_path / "s", {"alice": 3, "mallory": 1})
    store = memory.store
    path = tmp_path / "alice.jsonl"
    memory.export_user("alice", path)
    header, records = _lines(path)

    # Records relabelled, header left alone: the header's user does not own them.
    relabelled = tmp_path / "relabelled.jsonl"
    _write(relabelled, header, [{**r, "user_id": "mallory"} for r in records])
    with pytest.raises(StoreError, match=r"belongs to user 'mallory'.*export of 'alice'"):
        store.import_user(relabelled)

    # Header relabelled too: alice's ids are taken, by another user of this store.
    forged = tmp_path / "forged.jsonl"
    _write(forged, {**header, "user_id": "mallory"}, [{**r, "user_id": "mallory"} for r in records])
    with pytest.raises(StoreError, match="already belongs to another user"):
        store.import_user(forged)
    assert store.count("mallory") == 1 and store.count("alice") == 3
    assert set(_vector_owners(store, ids["alice"]).values()) == {"alice"}
    assert _journal(store) == []

    # Deleting mallory's own trajectory leaves alice's vectors alone.
    assert store.delete("mallory", ids["mallory"]) == 1
    assert len(store.get_vectors("alice", ids["alice"])) == 3

    # Under fresh ids (the explicit way to copy a memory to another user) it is fine.
    assert store.import_user(path, as_user="mallory") == 3
    assert not {r.id for r in store.get("mallory")} & set(ids["alice"])


def test_a_cut_or_changed_file_imports_nothing(tmp_path: Path) -> None:
    memory, _ = _recorded(tmp_path / "s", {"alice": 5})
    path = tmp_path / "alice.jsonl"
    memory.export_user("alice", path)
    fresh = TrajectoryStore(tmp_path / "fresh", collection_prefix=new_prefix())

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))  # 3 of 5
    with pytest.raises(StoreError, match="cut short or changed"):
        fresh.import_user(cut)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(path.read_text().replace("oslo", "OSLO", 1))
    with pytest.raises(StoreError, match="checksum"):
        fresh.import_user(changed)
    assert fresh.users() == [] and fresh.count() == 0

    # The count is checked on its own too (a forger who recomputes the checksum).
    header, records = _lines(path)
    short = tmp_path / "short.jsonl"
    _write(short, header, records[:3])
    with pytest.raises(StoreError, match="announces 5 trajectories but the file holds 3"):
        fresh.import_user(short)
    assert fresh.count() == 0
    assert fresh.import_user(path) == 5


def test_older_exports_without_checksum_need_consent(tmp_path: Path) -> None:
    memory, _ = _recorded(tmp_path / "s", {"alice": 2})
    path = tmp_path / "alice.jsonl"
    memory.export_user("alice", path)
    header, records = _lines(path)
    old = tmp_path / "v1.jsonl"
    _write(old, {**header, "version": 1}, records, checksum=False)
    fresh = TrajectoryStore(tmp_path / "fresh", collection_prefix=new_prefix())
    with pytest.raises(StoreError, match="older version, without a checksum"):
        fresh.import_user(old)
    assert fresh.count() == 0
    _write(old, {**header, "version": 1}, records[:1], checksum=False)
    with pytest.raises(StoreError, match="announces 2"):
        fresh.import_user(old, allow_unchecked=True)
    _write(old, {**header, "version": 1}, records, checksum=False)
    assert fresh.import_user(old, allow_unchecked=True) == 2


@pytest.mark.parametrize("bad", [float("nan"), 3e38])
def test_bad_vector_values_are_refused_before_any_write(tmp_path: Path, bad: float) -> None:
    memory, ids = _recorded(tmp_path / "s", {"alice": 2})
    path = tmp_path / "alice.jsonl"
    memory.export_user("alice", path)
    header, records = _lines(path)
    vector = np.frombuffer(base64.b64decode(records[1]["vector"]), dtype="<f4").copy()
    vector[7] = bad
    records[1]["vector"] = base64.b64encode(vector.astype("<f4").tobytes()).decode()
    _write(path, header, records)
    fresh = make_memory(tmp_path / "fresh")
    with pytest.raises(StoreError, match=rf"line 3 \(trajectory {ids['alice'][1]}\): its vector"):
        fresh.import_user(path)
    assert fresh.store.count() == 0 and _journal(fresh.store) == []

    # A direct add of a value that is not finite is refused (Chroma would fail after the
    # journal entry was written), and leaves no journal entry either.
    (record,) = memory.store.get("alice", ids["alice"][:1], with_embeddings=True)
    record.vector = vector.copy()
    record.vector[7] = float("nan")
    record.id = "fresh-id"
    with pytest.raises(StoreError, match="trajectory fresh-id: its vector"):
        memory.store.add([record])
    assert _journal(memory.store) == []


def test_a_failed_write_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory, _ = _recorded(tmp_path / "s", {"alice": 3})
    path = tmp_path / "alice.jsonl"
    memory.export_user("alice", path)
    fresh = make_memory(tmp_path / "fresh")
    store = fresh.store
    store.bind(memory.store._require_layout())
    pop = store.collections.population(create=True)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    # The last of the three writes; handles wrap one Chroma collection, so patch that.
    monkeypatch.setattr(pop.raw, "add", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        store.import_user(path)
    monkeypatch.undo()
    assert store.count("alice") == 0 and store.collections.vectors().count() == 0
    assert _journal(store) == []
    assert store.import_user(path) == 3


def test_export_refuses_to_overwrite_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory, _ = _recorded(tmp_path / "s", {"alice": 2})
    path = tmp_path / "alice.jsonl"
    path.write_text("precious\n")
    with pytest.raises(StoreError, match="already exists: pass --force"):
        memory.export_user("alice", path)
    assert path.read_text() == "precious\n"

    import fints_agent.memory.transfer as transfer_module

    def broken(array: Any) -> str:
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(transfer_module, "_f32_b64", broken)
    with pytest.raises(RuntimeError, match="encoder failed"):
        memory.export_user("alice", path, force=True)
    monkeypatch.undo()
    assert path.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.jsonl", "s"]
    assert memory.export_user("alice", path, force=True) == 2


def test_users_of_a_longer_prefix_are_not_listed(tmp_path: Path) -> None:
    short = make_memory(tmp_path / "s", "pre")
    longer = make_memory(tmp_path / "s", "pre-t")
    short.record_many([weather_item("alice", 0)], progress=False)
    longer.record_many([weather_item("bob", 0)], progress=False)
    assert short.store.users() == ["alice"]
    assert longer.store.users() == ["bob"]
    assert short.store.stats()["users"] == 1


def test_cli_import_and_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, prefix = str(tmp_path / "s"), new_prefix()
    memory = make_memory(store, prefix)
    memory.record_many([weather_item("alice", i) for i in range(2)], progress=False)
    opts = ["--store", store, "--prefix", prefix]
    path = tmp_path / "alice.jsonl"

    def run(*argv: str) -> int:
        return main(list(argv))

    assert run("export", "alice", str(path), *opts) == 0
    assert run("export", "alice", str(path), *opts) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert run("export", "alice", str(path), *opts, "--force") == 0
    header, records = _lines(path)
    _write(path, header, [{**r, "user_id": "mallory"} for r in records])
    assert run("import", str(path), *opts) == 2
    assert "belongs to user 'mallory'" in capsys.readouterr().err
    assert memory.store.count("mallory") == 0
