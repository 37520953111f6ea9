"""Soak test of the trajectory memory: many threads recording and retrieving for many users on
one store, for a fixed time; prints a table (or JSON with ``--json``).

Each of ``--threads`` threads loops until ``--seconds`` have passed, picking one of ``--users``
users at random and either recording a trajectory for them (``Memory.record_vector``) or
retrieving for them (``Memory.retrieve``). Vectors are random float32 of the store's layout
(a tiny random Llama, 2 layers x 2 sites x 32) and request embeddings a hashed bag of words, so
no model runs: the figures are the store's. Every request names its user (``u03``), so a
result can be checked against whose it must be.

Counted, and both must be 0 (the exit status is 1 otherwise):

``lost``
    Recorded ids (``record_vector`` returned them) that the user's trajectories do not list at
    the end, or whose stored vector is missing or differs from the one written.
``cross_user``
    Retrieved or listed trajectories of another user than the one asked for.

With ``--server``, the store is a Chroma server this script starts (``chroma run --path <tmp>
--host 127.0.0.1 --port <free>``) and stops; otherwise an embedded store in a temporary
directory.

Usage:
    .venv/bin/python tools/soak_memory.py                      # embedded, 8 threads, 16 users, 30 s
    .venv/bin/python tools/soak_memory.py --server --json
    .venv/bin/python tools/soak_memory.py --threads 2 --users 2 --seconds 3 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fints_agent.memory import Memory  # noqa: E402
from fints_agent.models import LoadedModel, wrap_model  # noqa: E402
from fints_agent.steering import SteeringVector  # noqa: E402

CITIES = ("oslo", "paris", "rome", "tokyo", "lima", "cairo", "delhi", "quito")
UNITS = ("celsius", "fahrenheit")
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "units": {"type": "string", "enum": list(UNITS)},
                },
                "required": ["city", "units"],
            },
        },
    }
]
_USER_TAG = re.compile(r"\bu\d{2,}\b")


class HashEmbedder:
    """Hashed bag-of-words embeddings (64 dimensions, unit length): no model runs."""

    name = "soak-hash64"
    dim = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


def tiny_model() -> LoadedModel:
    """A random 2-layer Llama (d_model 32) with a word-level tokenizer: the store's layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>", *CITIES, *UNITS, "weather", "in", "the"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return wrap_model(LlamaForCausalLM(config).eval(), fast, name="soak-tiny-llama")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    """A ``chroma run`` server on a free loopback port, stopped on exit; yields its URL."""
    local = Path(sys.executable).with_name("chroma")
    cli = str(local) if local.exists() else shutil.which("chroma")
    if cli is None:
        raise SystemExit("the chroma command is not installed (pip install chromadb)")
    port = _free_port()
    log_path = path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [cli, "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"chroma server exited: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("chroma server did not answer its heartbeat within 60 s")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Soak:
    """The shared state of the worker threads."""

    def __init__(self, memory: Memory, users: int, seed: int) -> None:
        self.memory = memory
        self.users = [f"u{i:02d}" for i in range(users)]
        self.seed = seed
        self.lock = threading.Lock()
        self.written: dict[str, dict[str, torch.Tensor]] = {u: {} for u in self.users}
        self.owner: dict[str, str] = {}
        self.records = 0
        self.retrievals = 0
        self.steered = 0
        self.cross_user = 0
        self.errors: dict[str, int] = {}
        self.first_errors: list[str] = []

    def _error(self, what: str, exc: BaseException) -> None:
        with self.lock:
            key = f"{what}: {type(exc).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{key}: {exc}")

    def work(self, index: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + index)
        gen = torch.Generator().manual_seed(self.seed * 1000 + index)
        layout = self.memory.layout
        shape = (len(layout.layers), len(layout.sites), layout.d_model)
        fingerprint = self.memory.lm.fingerprint
        n = 0
        while time.monotonic() < deadline:
            user = rng.choice(self.users)
            city = rng.choice(CITIES)
            if rng.random() < 0.5:
                n += 1
                units = rng.choice(UNITS)
                request = f"{user} t{index}n{n}: the weather in {city} in {units}"
                tensor = torch.randn(shape, generator=gen)
                vector = SteeringVector(tensor, layout.layers, layout.sites, fingerprint)
                call = {"name": "get_weather", "arguments": {"city": city, "units": units}}
                try:
                    tid = self.memory.record_vector(
                        user, [{"role": "user", "content": request}], TOOLS, call, vector
                    )
                except Exception as exc:  # counted and shown, the soak goes on
                    self._error("record", exc)
                    continue
                with self.lock:
                    self.written[user][tid] = tensor
                    self.owner[tid] = user
                    self.records += 1
            else:
                request = f"{user} the weather in {city}"
                try:
                    got = self.memory.retrieve(
                        user, [{"role": "user", "content": request}], TOOLS, min_similarity=-1.0
                    )
                except Exception as exc:
                    self._error("retrieve", exc)
                    continue
                crossed = sum(_user_of(text) != user for text in got.requests) + sum(
                    self.owner.get(tid, user) != user for tid in got.trajectory_ids
                )
                with self.lock:
                    self.retrievals += 1
                    self.steered += got.vector is not None
                    self.cross_user += crossed

    def check(self) -> tuple[int, int, int]:
        """``(lost, cross-user records listed, vectors compared)`` after the run."""
        lost = crossed = compared = 0
        for user in self.users:
            listed = self.memory.list_trajectories(user)
            ids = {r.id for r in listed}
            crossed += sum(r.user_id != user or _user_of(r.request) != user for r in listed)
            for tid, tensor in self.written[user].items():
                if tid not in ids:
                    lost += 1
                    continue
                try:
                    stored = self.memory.get_vector(user, tid)
                except Exception:
                    lost += 1
                    continue
                compared += 1
                lost += not torch.equal(stored.tensor, tensor)
        return lost, crossed, compared


def _user_of(text: str) -> str | None:
    match = _USER_TAG.search(text)
    return match.group(0) if match else None


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """One soak run; the figures as a dict."""
    torch.set_num_threads(1)
    lm = tiny_model()
    with tempfile.TemporaryDirectory(prefix="fints-soak-") as tmp:
        base = Path(tmp)
        with _location(base, args.server) as location:
            memory = Memory(lm, location, embedder=HashEmbedder(), cache_size=args.cache_size)
            try:
                state = Soak(memory, args.users, args.seed)
                start = time.monotonic()
                threads = [
                    threading.Thread(target=state.work, args=(i, start + args.seconds))
                    for i in range(args.threads)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - start
                check_start = time.monotonic()
                lost, listed_cross, compared = state.check()
                check_seconds = time.monotonic() - check_start
            finally:
                memory.close()
    return {
        "store": "server" if args.server else "embedded",
        "threads": args.threads,
        "users": args.users,
        "seconds": round(elapsed, 1),
        "records": state.records,
        "retrievals": state.retrievals,
        "steered_retrievals": state.steered,
        "records_per_s": round(state.records / elapsed, 1),
        "retrievals_per_s": round(state.retrievals / elapsed, 1),
        "lost": lost,
        "cross_user": state.cross_user + listed_cross,
        "vectors_compared": compared,
        "check_seconds": round(check_seconds, 1),
        "errors": state.errors,
        "first_errors": state.first_errors,
    }


@contextmanager
def _location(base: Path, server: bool) -> Iterator[str]:
    if server:
        with chroma_server(base) as url:
            yield url
    else:
        yield str(base / "store")


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("store", result["store"]),
        ("threads x users", f"{result['threads']} x {result['users']}"),
        ("seconds", result["seconds"]),
        ("records (per s)", f"{result['records']} ({result['records_per_s']})"),
        ("retrievals (per s)", f"{result['retrievals']} ({result['retrievals_per_s']})"),
        ("lost writes", result["lost"]),
        ("cross-user results", result["cross_user"]),
        ("vectors compared", result["vectors_compared"]),
        ("errors", sum(result["errors"].values())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--users", type=int, default=16, help="users (default 16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="run time (default 30)")
    parser.add_argument("--server", action="store_true", help="on a Chroma server it starts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-size", type=int, default=256, help="the memory's cache size")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.users < 1 or args.seconds <= 0:
        parser.error("--threads and --users must be at least 1, --seconds above 0")
    result = soak(args)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    ok = result["lost"] == 0 and result["cross_user"] == 0 and not result["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
