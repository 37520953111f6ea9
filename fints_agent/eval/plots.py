"""Plots of personalized-benchmark results (matplotlib, Agg backend: files only, no display).

Input is the per-turn rows of :meth:`fints_agent.eval.personal.PersonalRun.rows` (or the JSON
Lines written by ``fints-agent eval personal --out``), for one or several methods.

* :func:`plot_accuracy_by_history`: call accuracy against how many history records the user has
  in the turn's domain, one line per method.
* :func:`plot_changed_preference`: for turns where the user's preference changed, the share that
  followed the new preference and the old one, per method (e.g. steer with and without recency).

Example:
    >>> rows = [json.loads(line) for line in open("steer.jsonl")]
    >>> plot_accuracy_by_history({"steer": rows}, "docs/accuracy_by_history.png")
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_BINS",
    "accuracy_by_history",
    "changed_preference_rates",
    "plot_accuracy_by_history",
    "plot_changed_preference",
    "read_rows",
]

DEFAULT_BINS: tuple[tuple[int, int], ...] = ((0, 0), (1, 2), (3, 5), (6, 12), (13, 1000))
"""Bins of ``n_history_domain`` (inclusive bounds)."""


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Reads per-turn rows from a JSON Lines file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _bin_label(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"{low}+" if high >= 1000 else f"{low}-{high}"


def accuracy_by_history(
    rows: Sequence[Mapping[str, Any]],
    metric: str = "call",
    bins: Sequence[tuple[int, int]] = DEFAULT_BINS,
) -> list[dict[str, Any]]:
    """Accuracy per bin of history records in the turn's domain.

    Args:
        rows: Per-turn rows with ``n_history_domain`` and the metric's boolean.
        metric: ``"call"``, ``"function"`` or ``"args"``.
        bins: Inclusive ``(low, high)`` bounds.

    Returns:
        ``[{"bin", "low", "high", "n", "accuracy"}]`` for bins with at least one turn.
    """
    out = []
    for low, high in bins:
        inside = [r for r in rows if low <= int(r.get("n_history_domain", 0)) <= high]
        if inside:
            acc = sum(bool(r.get(metric)) for r in inside) / len(inside)
            out.append(
                {
                    "bin": _bin_label(low, high),
                    "low": low,
                    "high": high,
                    "n": len(inside),
                    "accuracy": round(acc, 4),
                }
            )
    return out


def changed_preference_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Shares of changed-preference turns that followed the new and the old preference."""
    labels = [r.get("follows") for r in rows if r.get("follows") is not None]
    n = len(labels)
    return {
        "n": n,
        "new": round(labels.count("new") / n, 4) if n else None,
        "old": round(labels.count("old") / n, 4) if n else None,
        "neither": round(labels.count("neither") / n, 4) if n else None,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_by_history(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    metric: str = "call",
    title: str | None = None,
) -> Path:
    """Line plot: accuracy against history records of the user in the turn's domain.

    Args:
        runs: Per method, its per-turn rows.
        path: The PNG to write.
        metric: ``"call"``, ``"function"`` or ``"args"``.
        title: Plot title.

    Returns:
        The written path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    labels: list[str] = [_bin_label(lo, hi) for lo, hi in DEFAULT_BINS]
    for method, rows in runs.items():
        points = {p["bin"]: p for p in accuracy_by_history(rows, metric)}
        xs = [i for i, b in enumerate(labels) if b in points]
        ys = [points[labels[i]]["accuracy"] for i in xs]
        ax.plot(xs, ys, marker="o", label=method)
    counts: dict[str, int] = defaultdict(int)
    first = next(iter(runs.values()), [])
    for p in accuracy_by_history(first, metric):
        counts[p["bin"]] = p["n"]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{b}\n(n={counts.get(b, 0)})" for b in labels])
    ax.set_xlabel("history records of the user in the turn's domain")
    ax.set_ylabel(f"{metric} accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"{metric} accuracy by amount of history")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_changed_preference(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Grouped bars: share of changed-preference turns following the new vs old preference.

    Args:
        runs: Per method (e.g. ``"steer"``, ``"steer + recency"``), its per-turn rows.
        path: The PNG to write.
        title: Plot title.

    Returns:
        The written path.
    """
    plt = _pyplot()
    names = list(runs)
    rates = [changed_preference_rates(runs[m]) for m in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.2), dpi=120)
    width = 0.38
    xs = list(range(len(names)))
    new = [r["new"] or 0.0 for r in rates]
    old = [r["old"] or 0.0 for r in rates]
    ax.bar([x - width / 2 for x in xs], new, width, label="new preference followed")
    ax.bar([x + width / 2 for x in xs], old, width, label="old preference followed")
    for x, a, b in zip(xs, new, old, strict=True):
        ax.text(x - width / 2, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
        ax.text(x + width / 2, b + 0.01, f"{b:.2f}", ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{m}\n(n={r['n']})" for m, r in zip(names, rates, strict=True)])
    ax.set_ylabel("share of test turns")
    ax.set_ylim(0, 1.1)
    ax.axhline(0.8, color="gray", linestyle=":", linewidth=1)
    ax.legend(fontsize=8)
    ax.set_title(title or "Users whose preference changed: which preference is followed")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
