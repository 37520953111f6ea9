"""Evaluation: the personalized tool-calling dataset, call scoring, and BFCL.

* :mod:`fints_agent.eval.dataset`: records, a strict JSON Lines loader, per-user grouping.
* :mod:`fints_agent.eval.scoring`: per-call scores and their summary.
* :mod:`fints_agent.eval.bfcl`: BFCL cases, tool conversion and the official AST checker
  (needs ``fints-agent setup --eval``; imported lazily).
* :mod:`fints_agent.eval.personal`: the personalized benchmark (methods, recorded history
  memories and their cache, batched answering, summaries, the run).
* :mod:`fints_agent.eval.run_bfcl`: BFCL answered by the local model, and the "no harm" check.
* :mod:`fints_agent.eval.dev_split` and :mod:`fints_agent.eval.tune`: tuning the model's preset
  on held-out history records.
* :mod:`fints_agent.eval.plots`: plots of per-turn rows.
* :mod:`fints_agent.eval.cli` and :mod:`fints_agent.eval.commands`: ``fints-agent eval`` and
  ``fints-agent tune`` (arguments, and what the commands do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fints_agent.lazy import lazy_exports

if TYPE_CHECKING:
    from fints_agent.eval.bfcl import (
        BfclCase,
        bfcl_tools,
        calls_valid,
        check_case,
        evaluate_bfcl,
        gold_calls,
        load_bfcl,
    )
    from fints_agent.eval.dataset import (
        DatasetError,
        PersonalRecord,
        ToolCall,
        UserRecords,
        group_by_user,
        load_records,
        parse_record,
    )
    from fints_agent.eval.scoring import CallScore, score_call, summarize, values_equal

_EXPORTS: dict[str, str] = {
    "BfclCase": "fints_agent.eval.bfcl",
    "bfcl_tools": "fints_agent.eval.bfcl",
    "calls_valid": "fints_agent.eval.bfcl",
    "check_case": "fints_agent.eval.bfcl",
    "evaluate_bfcl": "fints_agent.eval.bfcl",
    "gold_calls": "fints_agent.eval.bfcl",
    "load_bfcl": "fints_agent.eval.bfcl",
    "DatasetError": "fints_agent.eval.dataset",
    "PersonalRecord": "fints_agent.eval.dataset",
    "ToolCall": "fints_agent.eval.dataset",
    "UserRecords": "fints_agent.eval.dataset",
    "group_by_user": "fints_agent.eval.dataset",
    "load_records": "fints_agent.eval.dataset",
    "parse_record": "fints_agent.eval.dataset",
    "CallScore": "fints_agent.eval.scoring",
    "score_call": "fints_agent.eval.scoring",
    "summarize": "fints_agent.eval.scoring",
    "values_equal": "fints_agent.eval.scoring",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "BfclCase",
    "CallScore",
    "DatasetError",
    "PersonalRecord",
    "ToolCall",
    "UserRecords",
    "bfcl_tools",
    "calls_valid",
    "check_case",
    "evaluate_bfcl",
    "gold_calls",
    "group_by_user",
    "load_bfcl",
    "load_records",
    "parse_record",
    "score_call",
    "summarize",
    "values_equal",
]
