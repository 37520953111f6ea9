"""Benchmark of the trajectory memory; prints one JSON object.

Three parts (choose with ``--only``):

``latency``
    Retrieval + aggregation per turn for one user with 100, 1,000 and 10,000 trajectories, in a
    store of 1,000 users (the other 999 hold ``--background`` trajectories each). Vectors have the
    real shape of the default model (30 layers x 2 sites x 576 = 34,560 float32 values) but
    random values: computing 15,000 real vectors would take hours, and retrieval does not look
    at the values. Request embeddings are real all-MiniLM-L6-v2 embeddings of request texts.
    Reported per size: the whole turn (embed the request + query + fetch vectors + aggregate),
    the part after embedding, and the same with a warm vector cache, as p50/p95 in ms.
``ingestion``
    ``Memory.record_many`` on the default model (SmolLM2-135M) with real contrastive vectors,
    on trajectories of ``examples/data/personal_webapi.jsonl`` (given rejected calls, and built
    negatives), in trajectories/s; plus the store's write rate for full-shape vectors.
``quality``
    Which retrieval embedder retrieves better on ``examples/data/personal_webapi.jsonl``: for
    each test turn, the user's history turns are ranked by cosine similarity; top-1 hit rates
    for the same domain, the same tool, and the same tool with the same preference values.

Usage:
    .venv/bin/python tools/bench_memory.py --out runs/bench_memory.json
    .venv/bin/python tools/bench_memory.py --only latency --users 100 --sizes 100,1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fints_agent.memory import Memory, TrajectoryRecord, TrajectoryStore  # noqa: E402
from fints_agent.memory.aggregate import log_decay  # noqa: E402
from fints_agent.memory.embed import LMEmbedder, MiniLMEmbedder  # noqa: E402
from fints_agent.models import LoadedModel, load_model  # noqa: E402

DATA = ROOT / "examples" / "data" / "personal_webapi.jsonl"


def _load_rows() -> list[dict[str, Any]]:
    with DATA.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _pct(values: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def _request_pool(n: int, seed: int = 0) -> list[str]:
    """Distinct request texts: the dataset's requests, then variations of them."""
    rng = random.Random(seed)
    base = sorted({str(r["messages"][-1]["content"]) for r in _load_rows()})
    extras = ["please", "now", "for me", "quickly", "again", "today", "if you can", "thanks"]
    pool = list(base)
    while len(pool) < n:
        text = rng.choice(base).rstrip("?.!")
        pool.append(f"{text} {rng.choice(extras)} {rng.randint(1, 999)}")
    return pool[:n]


def _records(
    user: str,
    n: int,
    pool_emb: np.ndarray,
    pool_text: list[str],
    dim: int,
    rng: np.random.Generator,
) -> list[TrajectoryRecord]:
    idx = rng.integers(0, len(pool_text), size=n)
    vectors = rng.standard_normal((n, dim), dtype=np.float32) * 0.01
    now = time.time()
    return [
        TrajectoryRecord(
            id=uuid.uuid4().hex,
            user_id=user,
            request=pool_text[i],
            chosen={"name": "get_current_weather", "arguments": {"location": "Oslo"}},
            created_at=now,
            seq=j,
            rejected=[{"name": "get_weather_forecast", "arguments": {"location": "Oslo"}}],
            messages=[{"role": "user", "content": pool_text[i]}],
            embedding=pool_emb[i],
            vector=vectors[j],
        )
        for j, i in enumerate(idx)
    ]


def bench_latency(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Per-turn retrieval latency in a store of ``args.users`` users."""
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-memory-"))
    store_path = workdir / "store"
    shutil.rmtree(store_path, ignore_errors=True)
    embedder = MiniLMEmbedder()
    t0 = time.perf_counter()
    pool_text = _request_pool(args.pool)
    pool_emb = embedder.embed(pool_text)
    embed_pool_s = time.perf_counter() - t0

    store = TrajectoryStore(store_path)
    memory = Memory(lm, store, embedder=embedder, cache_size=0)
    dim = memory.layout.vector_dim
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    n_background = 0
    for u in range(args.users - 1):
        records = _records(f"user-{u:04d}", args.background, pool_emb, pool_text, dim, rng)
        store.add(records)
        n_background += len(records)
        if (u + 1) % 100 == 0:
            print(f"background users: {u + 1}", file=sys.stderr, flush=True)
    background_s = time.perf_counter() - t0

    queries = _request_pool(args.pool + args.queries, seed=1)[args.pool :]
    target = "target-user"
    have = 0
    results: dict[str, Any] = {}
    for size in sizes:
        t0 = time.perf_counter()
        while have < size:
            n = min(500, size - have)
            store.add(_records(target, n, pool_emb, pool_text, dim, rng))
            have += n
        fill_s = time.perf_counter() - t0
        store.reserve_seq(target, 0)
        for q in queries[:5]:  # warm-up: load the user's indexes
            memory.retrieve(target, [{"role": "user", "content": q}])
        whole, after_embed, steered = [], [], 0
        for q in queries:
            msgs = [{"role": "user", "content": q}]
            t0 = time.perf_counter()
            emb = embedder.embed([q])[0]
            t1 = time.perf_counter()
            r = memory.retrieve_by_embedding(target, emb)
            t2 = time.perf_counter()
            whole.append(t2 - t0)
            after_embed.append(t2 - t1)
            steered += r.vector is not None
            del msgs
        warm_memory = Memory(lm, store, embedder=embedder, cache_size=4096)
        q_emb = embedder.embed(queries)
        for e in q_emb[:20]:
            warm_memory.retrieve_by_embedding(target, e)
        warm = []
        for e in q_emb[:20]:  # repeated turns: vectors come from the cache
            t0 = time.perf_counter()
            warm_memory.retrieve_by_embedding(target, e)
            warm.append(time.perf_counter() - t0)
        results[str(size)] = {
            "trajectories_of_user": store.count(target),
            "turn_with_embedding": _pct(whole),
            "retrieval_and_aggregation": _pct(after_embed),
            "retrieval_warm_cache": _pct(warm),
            "turns": len(queries),
            "steered_turns": steered,
            "fill_seconds": round(fill_s, 1),
        }
        print(f"size {size}: {results[str(size)]}", file=sys.stderr, flush=True)
    disk = sum(f.stat().st_size for f in store_path.rglob("*") if f.is_file())
    out = {
        "users": len(store.users()),
        "background_trajectories": n_background,
        "vector_shape": [len(memory.layout.layers), len(memory.layout.sites), lm.d_model],
        "vector_values": dim,
        "vectors": "random float32 of the real shape (retrieval does not read the values)",
        "embedder": "minilm (real embeddings of request texts)",
        "k": memory.k,
        "background_setup_seconds": round(background_s, 1),
        "embed_pool_seconds": round(embed_pool_s, 1),
        "store_disk_gb": round(disk / 1e9, 2),
        "by_user_size": results,
    }
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def bench_ingestion(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Trajectories/s of ``record_many`` with real vectors on the default model."""
    rows = [r for r in _load_rows() if r["split"] == "history"][: args.ingest]
    out: dict[str, Any] = {"model": lm.name, "trajectories": len(rows)}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for label, use_rejected in (("given_rejected", True), ("built_negatives", False)):
            store = TrajectoryStore(Path(tmp) / label)
            memory = Memory(lm, store, embedder="minilm", batch_size=args.vector_batch)
            items = [{**r, "rejected": r["rejected"] if use_rejected else None} for r in rows]
            memory.record_many(items[:4], progress=False)  # warm-up
            t0 = time.perf_counter()
            memory.record_many(items[4:], batch_size=32, progress=False)
            dt = time.perf_counter() - t0
            n = len(items) - 4
            negs = [len(t.rejected) for t in store.get(items[5]["user_id"], with_payload=True)]
            out[label] = {
                "trajectories_per_s": round(n / dt, 2),
                "seconds": round(dt, 1),
                "mean_rejected_per_trajectory": round(float(np.mean(negs)), 2) if negs else None,
            }
            print(f"ingestion {label}: {out[label]}", file=sys.stderr, flush=True)
        # Store writes alone (full-shape vectors, no model).
        store = TrajectoryStore(Path(tmp) / "writes")
        memory = Memory(lm, store, embedder="minilm")
        rng = np.random.default_rng(0)
        pool = _request_pool(64)
        emb = memory.embedder.embed(pool)
        recs = _records("writer", 512, emb, pool, memory.layout.vector_dim, rng)
        t0 = time.perf_counter()
        for start in range(0, len(recs), 32):
            store.add(recs[start : start + 32])
        dt = time.perf_counter() - t0
        out["store_writes_only"] = {
            "trajectories_per_s": round(len(recs) / dt, 1),
            "batch": 32,
            "vector_values": memory.layout.vector_dim,
        }
    return out


def _hits(
    rows: list[dict[str, Any]], emb: np.ndarray, half_life: float | None = None
) -> dict[str, Any]:
    """Top-1 hit rates; with ``half_life``, ranked by ``sim / 0.1 + log_decay(age)``."""
    by_user: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["split"] == "history":
            by_user.setdefault(r["user_id"], []).append(i)
    stats: dict[str, list[float]] = {"domain": [], "tool": [], "tool_and_preference": []}
    kinds: dict[str, list[float]] = {}
    for i, r in enumerate(rows):
        hist = by_user.get(r["user_id"], [])
        if r["split"] != "test" or not hist:
            continue
        sims = emb[hist] @ emb[i]
        score = sims / 0.1
        if half_life is not None:
            turns = np.array([rows[h]["turn"] for h in hist])
            ages = np.array([(turns > t).sum() for t in turns], dtype=np.float64)
            score = score + log_decay(ages, half_life)
        best = rows[hist[int(np.argmax(score))]]
        same_domain = best["meta"]["domain"] == r["meta"]["domain"]
        same_tool = best["chosen"]["name"] == r["chosen"]["name"]
        prefs = r["meta"].get("preference_args") or []
        same_pref = same_tool and all(
            best["chosen"]["arguments"].get(a) == r["chosen"]["arguments"].get(a) for a in prefs
        )
        stats["domain"].append(same_domain)
        stats["tool"].append(same_tool)
        stats["tool_and_preference"].append(same_pref)
        kinds.setdefault(r["meta"]["user_kind"], []).append(same_pref)
    out: dict[str, Any] = {f"top1_same_{k}": round(float(np.mean(v)), 3) for k, v in stats.items()}
    out["top1_same_tool_and_preference_by_user_kind"] = {
        k: round(float(np.mean(v)), 3) for k, v in sorted(kinds.items())
    }
    out["test_turns"] = len(stats["domain"])
    return out


def bench_quality(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Top-1 retrieval hit rates of the two embedders on the personal web-API dataset."""
    rows = _load_rows()
    texts = [str(r["messages"][-1]["content"]) for r in rows]
    out: dict[str, Any] = {"data": str(DATA.relative_to(ROOT)), "records": len(rows)}
    embedders: dict[str, Callable[[list[str]], np.ndarray]] = {
        "minilm": MiniLMEmbedder().embed,
        "lm": LMEmbedder(lm).embed,
    }
    for name, embed in embedders.items():
        t0 = time.perf_counter()
        emb = embed(texts)
        dt = time.perf_counter() - t0
        out[name] = {**_hits(rows, emb), "embed_texts_per_s": round(len(texts) / dt, 1)}
        print(f"quality {name}: {out[name]}", file=sys.stderr, flush=True)
        for half_life in (4.0, 16.0):
            key = f"{name}+recency(half_life={half_life:g} turns)"
            out[key] = _hits(rows, emb, half_life)
            print(f"quality {key}: {out[key]}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(0)
    out["random"] = _hits(rows, rng.standard_normal((len(rows), 8)).astype(np.float32))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts and print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="latency,ingestion,quality")
    parser.add_argument("--users", type=int, default=1000, help="users in the latency store")
    parser.add_argument("--background", type=int, default=5, help="trajectories per other user")
    parser.add_argument("--sizes", default="100,1000,10000", help="target user's trajectories")
    parser.add_argument("--queries", type=int, default=200, help="turns measured per size")
    parser.add_argument("--pool", type=int, default=2000, help="distinct stored request texts")
    parser.add_argument("--ingest", type=int, default=68, help="trajectories for ingestion")
    parser.add_argument("--vector-batch", type=int, default=8, help="pairs per forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--workdir", default=None, help="where the latency store is built")
    parser.add_argument("--keep", action="store_true", help="keep the latency store")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = load_model()
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "model": {"name": lm.name, "layers": lm.num_layers, "d_model": lm.d_model},
    }
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    runners = {"latency": bench_latency, "ingestion": bench_ingestion, "quality": bench_quality}
    for part in parts:
        t0 = time.perf_counter()
        result[part] = runners[part](lm, args)
        result[part]["bench_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
