"""The Berkeley Function Calling Leaderboard (BFCL), single-turn AST categories, offline.

The data ships inside the PyPI package ``bfcl-eval``; install it with
``fints-agent setup --eval`` (a ``pip install --no-deps`` of the pinned version). Modules:

* :mod:`~fints_agent.eval.bfcl.data`: :func:`load_bfcl` reads a category into
  :class:`BfclCase` objects (:data:`AST_CATEGORIES`, :func:`bfcl_data_dir`).
* :mod:`~fints_agent.eval.bfcl.tools`: :func:`bfcl_tools` turns BFCL function docs (types like
  ``dict``, ``float``, ``tuple``, ``any``; names with dots) into valid JSON-schema OpenAI tools
  with legal names (:func:`convert_parameters`, :func:`legal_tool_name`,
  :func:`tool_name_map`).
* :mod:`~fints_agent.eval.bfcl.grading`: :func:`check_case` grades calls with the official
  AST checker without loading BFCL's model handlers; :func:`calls_valid`, :func:`gold_calls`;
  :func:`evaluate_bfcl` runs a predictor over a category and reports accuracy and validity.

Example:
    >>> report = evaluate_bfcl("simple_python", predict, limit=50)
    >>> report["accuracy"], report["valid_rate"]
"""

from fints_agent.eval.bfcl.data import AST_CATEGORIES, BfclCase, bfcl_data_dir, load_bfcl
from fints_agent.eval.bfcl.grading import (
    CHECKER_MODEL_NAME,
    calls_valid,
    check_case,
    evaluate_bfcl,
    gold_calls,
)
from fints_agent.eval.bfcl.tools import (
    bfcl_tools,
    convert_parameters,
    legal_tool_name,
    tool_name_map,
)

__all__ = [
    "AST_CATEGORIES",
    "CHECKER_MODEL_NAME",
    "BfclCase",
    "bfcl_data_dir",
    "bfcl_tools",
    "calls_valid",
    "check_case",
    "convert_parameters",
    "evaluate_bfcl",
    "gold_calls",
    "legal_tool_name",
    "load_bfcl",
    "tool_name_map",
]
