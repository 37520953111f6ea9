"""Export files: one user's trajectories, embeddings and vectors as checked JSON Lines.

Export files (:meth:`TrajectoryStore.export_user <fints_agent.memory.store.TrajectoryStore>`,
``fints-agent memory export``) are JSON Lines: a header (format, version, user, trajectory count,
layout, and the SHA-256 of every byte after the header line), then one trajectory per line.
Import checks the whole file before writing anything: every record must belong to the header's
user, the count and checksum must match, values must be finite; ids of another user of the store
are refused (``as_user`` imports under fresh ids instead), and a write that fails midway is
undone. Files of the first version have no checksum and are imported only when asked to
(``allow_unchecked``, ``--allow-unchecked``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fints_agent.memory.chroma import Collections
from fints_agent.memory.errors import StoreError
from fints_agent.memory.layout import StoreLayout
from fints_agent.memory.records import TrajectoryRecord, check_user_id, value_problem

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_ABS_VALUE",
    "export_target",
    "read_export",
    "refuse_taken_ids",
    "under_fresh_ids",
    "write_export",
]

EXPORT_FORMAT = "fints-trajectories"
"""The ``format`` field of an export file's header line."""
EXPORT_VERSION = 2
"""The ``version`` of the export files written now: version 2 added the header's ``checksum``
(version 1 files have none and are imported only on request, see
:meth:`TrajectoryStore.import_user <fints_agent.memory.store.TrajectoryStore>`)."""
MAX_ABS_VALUE = 1e6
"""The largest magnitude an imported vector or embedding value may have (steering vectors and
retrieval embeddings are far smaller; a value near the float32 maximum overflows the weighted
sums of retrieval to infinity)."""
_CHECKSUM_PLACEHOLDER = "sha256:" + "0" * 64


def _f32_b64(array: np.ndarray) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode("ascii")


def _b64_f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def _export_record(line: str, where: str) -> TrajectoryRecord:
    """One trajectory line of an export file.

    Raises:
        StoreError: A malformed line (``where`` names it).
    """
    try:
        d = json.loads(line)
        tid = d["id"]
        if not isinstance(tid, str) or not tid:
            raise ValueError(f"id {tid!r} is not a non-empty string")
        return TrajectoryRecord(
            id=tid,
            user_id=str(d["user_id"]),
            request=str(d["request"]),
            chosen=dict(d["chosen"]),
            created_at=float(d["created_at"]),
            seq=int(d["seq"]),
            rejected=list(d.get("rejected", [])),
            messages=list(d.get("messages", [])),
            tools=list(d.get("tools", [])),
            negatives=str(d.get("negatives", "given")),
            choices=dict(d.get("choices", {})),
            supersedes=d.get("supersedes") or None,
            superseded_by=d.get("superseded_by") or None,
            embedding=_b64_f32(d["embedding"]),
            vector=_b64_f32(d["vector"]),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise StoreError(f"{where}: malformed trajectory: {exc}") from exc


def export_target(path: str | Path, *, force: bool = False) -> Path:
    """The file to export to, checked before anything is read.

    Raises:
        StoreError: ``path`` is a directory, or exists (without ``force``).
    """
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"{target} is a directory")
    if target.exists() and not force:
        raise StoreError(f"{target} already exists: pass --force to overwrite it")
    return target


def write_export(
    target: Path,
    user_id: str,
    layout: StoreLayout | None,
    records: Sequence[TrajectoryRecord],
) -> int:
    """Write a user's trajectories (those read with embeddings and vectors) to an export file.

    The first line is a header: format, version (:data:`EXPORT_VERSION`), user, count,
    layout and ``checksum``, the SHA-256 of every byte after the header line
    (``"sha256:<hex>"``). Each further line is one trajectory of the user, with its
    embedding and vector as base64 of little-endian float32 (exact). The file is written
    under ``PATH.tmp`` and renamed into place once complete; on failure the temporary file
    is removed.

    Returns:
        How many trajectories were written.

    Raises:
        StoreError: The file cannot be written.
    """
    records = [r for r in records if r.vector is not None and r.embedding is not None]
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "user_id": user_id,
        "count": len(records),
        "layout": layout.to_dict() if layout else None,
        "checksum": _CHECKSUM_PLACEHOLDER,
    }
    tmp = target.with_name(target.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            head = (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(head)
            digest = hashlib.sha256()
            for r in records:
                assert r.vector is not None and r.embedding is not None
                line = {
                    **r.summary(),
                    "rejected": r.rejected,
                    "messages": r.messages,
                    "tools": r.tools,
                    "choices": r.choices,
                    "embedding": _f32_b64(r.embedding),
                    "vector": _f32_b64(r.vector),
                }
                data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(data)
                f.write(data)
            # The checksum replaces its placeholder: same length, the header is rewritten.
            header["checksum"] = "sha256:" + digest.hexdigest()
            final = (json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8")
            if len(final) != len(head):
                raise StoreError("internal error: the export header changed length")
            f.seek(0)
            f.write(final)
        tmp.replace(target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {target}: {exc}") from exc
        raise
    return len(records)


def read_export(
    path: str | Path, *, allow_unchecked: bool = False
) -> tuple[dict[str, Any], list[TrajectoryRecord]]:
    """Read and check an export file: its header and its records.

    Checked: the header (format, version, a usable ``user_id``, ``count``, ``layout``), the
    checksum of the body (files of version 1 have none: they are read only with
    ``allow_unchecked``), that every record belongs to the header's user, that ids do not
    repeat, that vectors and embeddings have the layout's widths and finite values within
    :data:`MAX_ABS_VALUE`, and that the file holds exactly ``count`` records (a file cut
    at a line boundary is refused too).

    Args:
        path: A file written by :func:`write_export`.
        allow_unchecked: Accept a version-1 file, which has no checksum.

    Returns:
        ``(header, records)``, records with embeddings and vectors.

    Raises:
        StoreError: Not an export file, or any check fails (the message names the line and
            the trajectory).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    first, _, body = data.partition(b"\n")
    try:
        header = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is not a trajectory export: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise StoreError(f"{path} is not a trajectory export (no {EXPORT_FORMAT!r} header)")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{path}: malformed header: version {version!r}")
    if version > EXPORT_VERSION:
        raise StoreError(f"{path} has format version {version}, newer than this")
    owner = header.get("user_id")
    try:
        check_user_id(owner)
    except ValueError as exc:
        raise StoreError(f"{path}: malformed header: {exc}") from exc
    count = header.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise StoreError(f"{path}: malformed header: count {count!r}")
    checksum = header.get("checksum")
    if version >= 2 or checksum is not None:
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if checksum != actual:
            raise StoreError(
                f"{path}: the trajectories do not match the header's checksum (the file was "
                "cut short or changed): nothing imported"
            )
    elif not allow_unchecked:
        raise StoreError(
            f"{path} was written by an older version, without a checksum: its integrity "
            "cannot be verified; pass --allow-unchecked to import it anyway (the count "
            "of trajectories is still checked)"
        )
    layout = None
    if header.get("layout") is not None:
        layout = StoreLayout.from_dict(header["layout"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path} is not UTF-8 text: {exc}") from exc
    records: list[TrajectoryRecord] = []
    seen: set[str] = set()
    for n, line in enumerate(text.split("\n"), start=2):
        if not line.strip():
            continue
        record = _export_record(line, f"{path}, line {n}")
        where = f"{path}, line {n} (trajectory {record.id})"
        if record.user_id != owner:
            raise StoreError(
                f"{where}: the record belongs to user {record.user_id!r}, but the file is "
                f"an export of {owner!r}: nothing imported"
            )
        if record.id in seen:
            raise StoreError(f"{where}: the id repeats an earlier record")
        seen.add(record.id)
        if layout is None:
            raise StoreError(f"{where}: the header has no layout for its vectors")
        assert record.vector is not None and record.embedding is not None
        if record.vector.size != layout.vector_dim:
            raise StoreError(
                f"{where}: a vector of {record.vector.size} values, the header's layout "
                f"has {layout.vector_dim}"
            )
        if record.embedding.size != layout.embed_dim:
            raise StoreError(
                f"{where}: an embedding of {record.embedding.size} values, the header's "
                f"layout has {layout.embed_dim}"
            )
        for what, values in (("vector", record.vector), ("embedding", record.embedding)):
            problem = value_problem(values, MAX_ABS_VALUE)
            if problem is not None:
                raise StoreError(f"{where}: its {what} {problem}: nothing imported")
        records.append(record)
    if len(records) != count:
        raise StoreError(
            f"{path}: the header announces {count} trajectories but the file holds "
            f"{len(records)} (cut short or changed): nothing imported"
        )
    return header, records


def under_fresh_ids(records: Sequence[TrajectoryRecord], user_id: str) -> list[TrajectoryRecord]:
    """The records as another user's, under fresh ids (supersession links follow them)."""
    fresh = {r.id: uuid.uuid4().hex for r in records}
    return [
        replace(
            r,
            id=fresh[r.id],
            user_id=user_id,
            supersedes=fresh.get(r.supersedes or ""),
            superseded_by=fresh.get(r.superseded_by or ""),
        )
        for r in records
    ]


def refuse_taken_ids(
    collections: Collections, user_id: str, ids: list[str], path: str | Path
) -> None:
    """Refuse ids the shared collections already hold (another user's, or orphans).

    Raises:
        StoreError: An id is taken; nothing is imported.
    """
    for col in (collections.vectors(), collections.population()):
        if col is None:
            continue
        for start in range(0, len(ids), 1000):
            got = col.get(ids=ids[start : start + 1000], include=["metadatas"])
            for tid, meta in zip(got["ids"], got["metadatas"], strict=True):
                if (meta or {}).get("user_id") != user_id:
                    raise StoreError(
                        f"{path}: trajectory id {tid} already belongs to another user of "
                        "this store: nothing imported (import with --as-user to give the "
                        "trajectories fresh ids)"
                    )
                raise StoreError(
                    f"{path}: trajectory id {tid} is in the store without a trajectory "
                    "(left by an interrupted write): run `fints-agent memory recover "
                    "--full` first; nothing imported"
                )
