"""The main demo (``make demo``) on the real embedded model."""

from __future__ import annotations

import pytest

from fints_agent.demo import HISTORIES, REQUESTS, run_demo


@pytest.mark.model
@pytest.mark.timeout(1800)
def test_demo_gives_each_user_valid_steered_calls_that_differ(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = run_demo(verbose=True)
    printed = capsys.readouterr().out
    assert set(results) == set(HISTORIES)
    tools = {call["name"] for history in HISTORIES.values() for _, call in history}
    for user, rows in results.items():
        assert [r["request"] for r in rows] == REQUESTS
        for r in rows:
            assert r["call"].split("(")[0] in tools, (user, r["call"])  # a valid call
            assert r["steered"] and r["trajectories"], (user, r["request"])
            assert r["call"].split("(")[0] in printed  # the table shows it (wrapped)
    # The same requests, different histories: the users' calls are not all the same.
    alice, bob = results["alice"], results["bob"]
    assert any(a["call"] != b["call"] for a, b in zip(alice, bob, strict=True))
