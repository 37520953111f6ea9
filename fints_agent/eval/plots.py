"""Plots of personalized-benchmark results (matplotlib, Agg backend: files only, no display).

Input is the per-turn rows of :meth:`fints_agent.eval.personal.PersonalRun.rows` (or the JSON
Lines written by ``fints-agent eval personal --out``), for one or several methods.

* :func:`plot_accuracy_by_history`: call accuracy against how many history records the user has
  in the turn's domain, a bar per method in each (non-empty) bin.
* :func:`plot_changed_preference`: for turns where the user's preference changed, the share that
  followed the new preference and the old one, per method (e.g. steer with and without recency),
  against a labelled target; the rest of the turns followed neither.
* :func:`plot_corrections`: after a preference changes (``eval personal --corrections``), the
  share of turns following the new preference against the corrections given so far, a line
  per method.

Both titles name the model and the data (``model=``, ``split=``). The ``*_figure`` functions
return the matplotlib figure instead of writing it.

Example:
    >>> rows = [json.loads(line) for line in open("steer.jsonl")]
    >>> plot_accuracy_by_history(
    ...     {"steer": rows}, "docs/accuracy_by_history.png",
    ...     model="smollm2-135m-instruct", split="personal_webapi.jsonl, test split",
    ... )
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_BINS",
    "NEITHER_NOTE",
    "accuracy_by_history",
    "accuracy_by_history_figure",
    "changed_preference_figure",
    "changed_preference_rates",
    "corrections_figure",
    "plot_accuracy_by_history",
    "plot_changed_preference",
    "plot_corrections",
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
    from fints_agent.install import require_extra

    require_extra("matplotlib", "plots", "plotting")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _context(model: str | None, split: str | None) -> str:
    """The subtitle naming the model and the data the turns come from."""
    parts = []
    if model:
        parts.append(f"model: {model}")
    if split:
        parts.append(f"data: {split}")
    return " · ".join(parts)


def _title(main: str, model: str | None, split: str | None) -> str:
    context = _context(model, split)
    return f"{main}\n{context}" if context else main


def _counts_label(counts: Sequence[int]) -> str:
    low, high = min(counts), max(counts)
    return f"n={low}" if low == high else f"n={low}-{high}"


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, bbox_inches="tight")  # keeps a legend or note outside the axes
    finally:
        plt.close(fig)
    return out


def accuracy_by_history_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "call",
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
    bins: Sequence[tuple[int, int]] = DEFAULT_BINS,
) -> Any:
    """Grouped bars: accuracy per bin of history records in the turn's domain, per method.

    The bins are categories, so each method gets a bar per bin (no line joins them); bins
    without any turn are left out, and the legend sits outside the axes.

    Args:
        runs: Per method, its per-turn rows.
        metric: ``"call"``, ``"function"`` or ``"args"``.
        title: Plot title (default: ``"<metric> accuracy by amount of history"``).
        model: The model answered with (shown under the title).
        split: The data the turns come from, e.g. ``"personal_webapi.jsonl, test split"``.
        bins: Inclusive ``(low, high)`` bounds.

    Returns:
        The matplotlib figure (close it with ``plt.close(fig)``).
    """
    plt = _pyplot()
    points = {
        method: {p["bin"]: p for p in accuracy_by_history(rows, metric, bins)}
        for method, rows in runs.items()
    }
    labels = [_bin_label(lo, hi) for lo, hi in bins]
    labels = [b for b in labels if any(b in per_bin for per_bin in points.values())]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120, layout="constrained")
    width = 0.8 / max(1, len(points))
    for i, (method, per_bin) in enumerate(points.items()):
        xs = [j for j, b in enumerate(labels) if b in per_bin]
        ys = [per_bin[labels[j]]["accuracy"] for j in xs]
        offset = (i - (len(points) - 1) / 2) * width
        ax.bar([x + offset for x in xs], ys, width, label=method)
    ticks = []
    for b in labels:
        counts = [per_bin[b]["n"] for per_bin in points.values() if b in per_bin]
        ticks.append(f"{b}\n({_counts_label(counts)})")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(ticks)
    ax.set_xlabel("history records of the user in the turn's domain (turns per bin)")
    ax.set_ylabel(f"{metric} accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    ax.set_title(_title(title or f"{metric} accuracy by amount of history", model, split))
    return fig


def plot_accuracy_by_history(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    metric: str = "call",
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
) -> Path:
    """Writes :func:`accuracy_by_history_figure` as a PNG.

    Args:
        runs: Per method, its per-turn rows.
        path: The PNG to write.
        metric: ``"call"``, ``"function"`` or ``"args"``.
        title: Plot title.
        model: The model answered with (shown under the title).
        split: The data the turns come from (shown under the title).

    Returns:
        The written path.
    """
    fig = accuracy_by_history_figure(runs, metric=metric, title=title, model=model, split=split)
    return _save(fig, path)


NEITHER_NOTE = (
    "new + old < 1: the other turns follow neither preference\n"
    "(another tool, other values of the arguments the two preferences differ in, or no call)"
)
"""The note under :func:`changed_preference_figure`."""


def changed_preference_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
    target: float | None = 0.8,
) -> Any:
    """Grouped bars: share of changed-preference turns following the new vs old preference.

    A note under the axes says why the two shares of a method do not add up to 1.

    Args:
        runs: Per method (e.g. ``"steer"``, ``"steer + recency"``), its per-turn rows.
        title: Plot title.
        model: The model answered with (shown under the title).
        split: The data the turns come from (shown under the title).
        target: Share of turns following the new preference aimed at, drawn as a labelled
            dotted line (None: no line).

    Returns:
        The matplotlib figure (close it with ``plt.close(fig)``).
    """
    plt = _pyplot()
    names = list(runs)
    rates = [changed_preference_rates(runs[m]) for m in names]
    fig, ax = plt.subplots(
        figsize=(max(7, 1.6 * len(names) + 3.5), 4.4), dpi=120, layout="constrained"
    )
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
    ax.set_ylabel("share of changed-preference test turns")
    ax.set_ylim(0, 1.1)
    if target is not None:
        ax.axhline(
            target,
            color="gray",
            linestyle=":",
            linewidth=1,
            label=f"target: new preference in {target:.0%} of turns",
        )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    ax.set_title(
        _title(
            title or "Users whose preference changed: which preference is followed", model, split
        )
    )
    ax.set_xlabel(NEITHER_NOTE, fontsize=8, color="dimgray")  # a note under the bars
    return fig


def plot_changed_preference(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
    target: float | None = 0.8,
) -> Path:
    """Writes :func:`changed_preference_figure` as a PNG.

    Args:
        runs: Per method (e.g. ``"steer"``, ``"steer + recency"``), its per-turn rows.
        path: The PNG to write.
        title: Plot title.
        model: The model answered with (shown under the title).
        split: The data the turns come from (shown under the title).
        target: Share of turns following the new preference aimed at (None: no line).

    Returns:
        The written path.
    """
    fig = changed_preference_figure(runs, title=title, model=model, split=split, target=target)
    return _save(fig, path)


def corrections_figure(
    curves: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
    targets: Mapping[str, float] | None = None,
) -> Any:
    """Lines: share of turns following the new preference against corrections so far.

    Args:
        curves: Per method, its ``by_corrections`` summary (``{"0": {"n", "follows_new",
            ...}, "1": ..., "3+": ...}``, see
            :func:`~fints_agent.eval.personal.by_corrections`).
        title: Plot title.
        model: The model answered with (shown under the title).
        split: The data the turns come from (shown under the title).
        targets: Per number of corrections (``"1"``, ``"2"``), the share aimed at, drawn as
            labelled markers (None: none).

    Returns:
        The matplotlib figure (close it with ``plt.close(fig)``).
    """
    plt = _pyplot()
    keys = sorted({k for curve in curves.values() for k in curve}, key=lambda k: int(k.rstrip("+")))
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120, layout="constrained")
    xs = list(range(len(keys)))
    for name, curve in curves.items():
        points = [(x, curve[k]["follows_new"]) for x, k in zip(xs, keys, strict=True) if k in curve]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    for key, share in (targets or {}).items():
        if key in keys:
            ax.plot([keys.index(key)], [share], marker="_", markersize=22, color="gray")
            ax.annotate(
                f"target {share:.2f}",
                (keys.index(key), share),
                textcoords="offset points",
                xytext=(8, 4),
                fontsize=8,
                color="dimgray",
            )
    counts = [
        max((curve[k]["n"] for curve in curves.values() if k in curve), default=0) for k in keys
    ]
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{k}\n(n={n})" for k, n in zip(keys, counts, strict=True)])
    ax.set_xlabel("corrections the user gave in the domain before the turn")
    ax.set_ylabel("share following the new preference")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    ax.set_title(
        _title(title or "After a preference changes: how fast the model follows", model, split)
    )
    return fig


def plot_corrections(
    curves: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
    *,
    title: str | None = None,
    model: str | None = None,
    split: str | None = None,
    targets: Mapping[str, float] | None = None,
) -> Path:
    """Writes :func:`corrections_figure` as a PNG and returns its path."""
    fig = corrections_figure(curves, title=title, model=model, split=split, targets=targets)
    return _save(fig, path)
