"""Speed figures, printed as JSON: decode rates with and without steering, recording, turn
latency, batching, load times.

Ratios are measured in one run, alternating the variants, because shared machines are noisy.
Run with ``fints-agent bench`` (all sections) or ``fints-agent bench --only steering``.

Modules: :mod:`~fints_agent.bench.data` (tools, prompts and dataset records the sections run
on), :mod:`~fints_agent.bench.decoding` (decode rates: steering, ``generate()``, grammars),
:mod:`~fints_agent.bench.turns` (personalization overhead, recording, turn latency, batches),
:mod:`~fints_agent.bench.run` (every section, load times, the memory benchmark).
"""

from fints_agent.bench.decoding import bench_constrained, bench_peer, bench_steering, timed_rate
from fints_agent.bench.run import SECTIONS, bench_load, bench_memory, run_bench
from fints_agent.bench.turns import (
    bench_batch,
    bench_personalization,
    bench_recording,
    bench_turns,
)

__all__ = [
    "SECTIONS",
    "bench_batch",
    "bench_constrained",
    "bench_load",
    "bench_memory",
    "bench_peer",
    "bench_personalization",
    "bench_recording",
    "bench_steering",
    "bench_turns",
    "run_bench",
    "timed_rate",
]
