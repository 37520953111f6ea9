"""Evaluation: the personalized tool-calling dataset, call scoring, and BFCL.

* :mod:`fints_agent.eval.dataset`: records, a strict JSON Lines loader, per-user grouping.
* :mod:`fints_agent.eval.scoring`: per-call scores and their summary.
* :mod:`fints_agent.eval.bfcl`: BFCL cases, tool conversion and the official AST checker
  (needs ``pip install --no-deps bfcl-eval``; imported lazily).
"""

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
