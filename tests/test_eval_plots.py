"""Plots of personalized-benchmark rows, read back from the matplotlib figures (no pixels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from fints_agent.eval.plots import (
    NEITHER_NOTE,
    accuracy_by_history_figure,
    changed_preference_figure,
    plot_accuracy_by_history,
    plot_changed_preference,
)

MODEL = "smollm2-135m-instruct"
SPLIT = "personal_small.jsonl, test split"


def _rows(pattern: list[tuple[int, bool]]) -> list[dict[str, Any]]:
    return [{"n_history_domain": n, "call": ok} for n, ok in pattern]


@pytest.fixture
def figures() -> Iterator[list[Any]]:
    """Figures made by a test, closed afterwards."""
    import matplotlib.pyplot as plt

    made: list[Any] = []
    yield made
    for fig in made:
        plt.close(fig)


def test_accuracy_by_history_is_bars_per_bin_without_empty_bins(figures: list[Any]) -> None:
    runs = {
        "rag": _rows([(1, True), (2, False), (4, True), (20, True)]),
        "steer": _rows([(1, False), (2, False), (4, True), (20, False)]),
    }
    fig = accuracy_by_history_figure(runs, model=MODEL, split=SPLIT)
    figures.append(fig)
    (ax,) = fig.axes
    title = ax.get_title()
    assert f"model: {MODEL}" in title and f"data: {SPLIT}" in title
    assert not ax.get_lines()  # categorical bins: no line joins them
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["1-2\n(n=2)", "3-5\n(n=1)", "13+\n(n=1)"]  # the empty 0 and 6-12 bins
    heights = {c.get_label(): [round(p.get_height(), 2) for p in c.patches] for c in ax.containers}
    assert heights == {"rag": [0.5, 1.0, 1.0], "steer": [0.0, 1.0, 0.0]}
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["rag", "steer"]
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert box.x0 >= ax.get_window_extent().x1  # outside the axes: it covers no bar


def test_accuracy_by_history_counts_that_differ_show_a_range(figures: list[Any]) -> None:
    runs = {"a": _rows([(1, True), (1, True)]), "b": _rows([(1, True)])}
    fig = accuracy_by_history_figure(runs)
    figures.append(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1-2\n(n=1-2)"]
    assert fig.axes[0].get_title() == "call accuracy by amount of history"


def test_changed_preference_labels_the_target_and_says_what_is_left(
    figures: list[Any],
) -> None:
    rows = [{"follows": f} for f in ("new", "new", "old", "neither")] + [{"follows": None}]
    fig = changed_preference_figure({"steer": rows}, model=MODEL, split=SPLIT)
    figures.append(fig)
    (ax,) = fig.axes
    assert f"model: {MODEL}" in ax.get_title() and f"data: {SPLIT}" in ax.get_title()
    (target,) = ax.get_lines()
    assert target.get_ydata()[0] == 0.8
    assert target.get_label() == "target: new preference in 80% of turns"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert target.get_label() in labels and "new preference followed" in labels
    assert ax.get_xlabel() == NEITHER_NOTE and "neither" in NEITHER_NOTE
    assert [t.get_text() for t in ax.get_xticklabels()] == ["steer\n(n=4)"]
    bars = [round(c.patches[0].get_height(), 2) for c in ax.containers]
    assert bars == [0.5, 0.25]  # new, old: the remaining quarter followed neither


def test_no_target_line(figures: list[Any]) -> None:
    fig = changed_preference_figure({"rag": [{"follows": "new"}]}, target=None)
    figures.append(fig)
    assert not fig.axes[0].get_lines()


def test_plots_write_png_files(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    rows = [{"n_history_domain": 3, "call": True, "follows": "old"}]
    a = plot_accuracy_by_history({"rag": rows}, tmp_path / "a" / "acc.png", model=MODEL)
    b = plot_changed_preference({"rag": rows}, tmp_path / "b.png", split=SPLIT)
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plt.get_fignums()) == before  # the figures are closed
