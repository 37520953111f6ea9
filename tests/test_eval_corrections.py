"""The corrections protocol: a changed preference replayed turn by turn, each wrong answer
corrected (the model's call rejected), and the share following the new preference per number
of corrections."""

from __future__ import annotations

from typing import Any

import pytest
from test_eval_personal import DATA, FakeEngine, HashEmbedder
from tiny import tiny_lm

from fints_agent.eval.dataset import PersonalRecord, load_records
from fints_agent.eval.personal import by_corrections, corrections_records, run_corrections
from fints_agent.eval.personal.corrections import corrections_before


@pytest.fixture(scope="module")
def records() -> list[PersonalRecord]:
    return load_records(DATA)


def test_the_stream_is_every_record_after_the_change(records: list[PersonalRecord]) -> None:
    picked = corrections_records(records)
    changed = {r.user_id for r in records if (r.meta or {}).get("user_kind") == "changed"}
    assert {r.user_id for r in picked} == changed
    stream = [r for r in picked if r.split == "test"]
    assert stream and all((r.meta or {}).get("phase") == "new" for r in stream)
    after = [r for r in records if r.user_id in changed and (r.meta or {}).get("phase") == "new"]
    assert [(r.user_id, r.turn) for r in stream] == sorted((r.user_id, r.turn) for r in after)
    history = [r for r in picked if r.split == "history"]
    assert history and all((r.meta or {}).get("phase") != "new" for r in history)
    assert corrections_before(stream) == list(range(len(stream)))  # one user, one domain here
    with pytest.raises(ValueError, match="changed"):
        corrections_records([r for r in records if r.user_id not in changed])


def _run(records: list[PersonalRecord], method: str, **kwargs: Any) -> Any:
    FakeEngine.instances.clear()
    return run_corrections(
        tiny_lm("llama"),
        records,
        method,
        engine_factory=FakeEngine,
        embedder=HashEmbedder(),
        progress=False,
        **kwargs,
    )


def test_each_turn_is_answered_then_recorded_as_its_users_correction(
    records: list[PersonalRecord],
) -> None:
    run = _run(records, "rag")
    assert run.summary["protocol"] == "corrections" and run.summary["feedback"] == "correction"
    (engine,) = FakeEngine.instances
    stream = [o.record for o in run.outcomes]
    user = stream[0].user_id
    history = [r for r in corrections_records(records) if r.split == "history"]
    # Each turn sees the history before the change plus one feedback per earlier turn.
    assert engine.memory_sizes == [len(history) + i for i in range(len(stream))]
    listed = engine.memory.store.get(user, with_payload=True)
    for outcome in run.outcomes:
        (kept,) = [
            t for t in listed if t.request == outcome.record.request and t.seq >= len(history)
        ]
        assert kept.chosen == outcome.record.chosen.as_dict()
        if outcome.score.call:
            assert kept.rejected == [r.as_dict() for r in outcome.record.rejected]
        else:  # the user corrects the model: its own call is the rejected one
            assert kept.rejected == [outcome.call]
    assert not all(o.score.call for o in run.outcomes), "the test needs a wrong answer"
    curve = run.summary["by_corrections"]
    assert list(curve) == ["0", "1", "2", "3+"] and all(g["n"] == 1 for g in curve.values())
    assert by_corrections(run) == curve


def test_zero_shot_runs_without_feedback_and_options_are_checked(
    records: list[PersonalRecord],
) -> None:
    run = _run(records, "zero-shot")
    assert run.summary["online"] is False and run.summary["feedback"] is None
    assert set(run.summary["by_corrections"]) >= {"0"}
    with pytest.raises(ValueError, match="online"):
        _run(records, "rag", online=True)


def test_corrections_plot_and_table(records: list[PersonalRecord], tmp_path: Any) -> None:
    from fints_agent.eval.commands import corrections_table
    from fints_agent.eval.plots import corrections_figure, plot_corrections

    run = _run(records, "rag")
    curve = run.summary["by_corrections"]
    path = plot_corrections({"rag": curve}, tmp_path / "c.png", targets={"1": 0.8, "2": 0.9})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = corrections_figure({"rag": curve, "none": {"0": curve["0"]}})
    (ax,) = fig.axes
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [4, 1]
    table = corrections_table([run.summary])
    assert table.splitlines()[1].split() == ["method", "0", "1", "2", "3+"]
    assert table.splitlines()[2].startswith("rag ")
