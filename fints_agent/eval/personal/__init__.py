"""The personalized tool-calling benchmark: ingest each user's history, answer their test turns.

The protocol (``fints-agent eval personal``) is described in
:mod:`~fints_agent.eval.personal.protocol`. Modules:

* :mod:`~fints_agent.eval.personal.methods`: :data:`METHODS`, the engine personalization of
  each, and the ``knn`` baseline (:func:`knn_call`).
* :mod:`~fints_agent.eval.personal.recording`: opening memories and recording history records
  into them (:func:`open_memory`, :func:`temporary_memory`, :func:`ingest_history`).
* :mod:`~fints_agent.eval.personal.history_cache`: kept history stores in the user cache
  (:data:`HISTORY_CACHE`, :func:`history_store_key`, :func:`history_cache_dir`).
* :mod:`~fints_agent.eval.personal.history`: :func:`history_memory`, a memory holding exactly
  a run's history (temporary, in a directory of your own, or kept in the cache).
* :mod:`~fints_agent.eval.personal.answering`: answering test turns in padded batches
  (:func:`answer_turns`, :class:`TurnOutcome`, :data:`LATENCY_BASIS`).
* :mod:`~fints_agent.eval.personal.preferences`: changed preferences
  (:func:`old_preference_call`, :func:`follow_label`).
* :mod:`~fints_agent.eval.personal.summary`: summaries and breakdowns
  (:func:`summarize_outcomes`, :func:`decided_by`, :func:`machine_info`, :class:`PersonalRun`).
* :mod:`~fints_agent.eval.personal.protocol`: the run, offline or online
  (:func:`run_personal`, :func:`select_test_records`, :func:`domain_history_counts`).
* :mod:`~fints_agent.eval.personal.corrections`: a changed preference corrected online, turn
  by turn (:func:`run_corrections`, :func:`by_corrections`, :func:`corrections_records`).

Example:
    >>> run = run_personal(load_model(), load_records(path), "rag+steer", limit=40)
    >>> run.summary["call_acc"], run.rows()[0]["domain"]
"""

from fints_agent.eval.personal.answering import LATENCY_BASIS, TurnOutcome, answer_turns
from fints_agent.eval.personal.corrections import (
    by_corrections,
    corrections_records,
    run_corrections,
)
from fints_agent.eval.personal.history import history_memory
from fints_agent.eval.personal.history_cache import (
    HISTORY_CACHE,
    history_cache_dir,
    history_store_key,
)
from fints_agent.eval.personal.methods import METHODS, knn_call, personalization_of
from fints_agent.eval.personal.preferences import follow_label, old_preference_call
from fints_agent.eval.personal.protocol import (
    domain_history_counts,
    run_personal,
    select_test_records,
)
from fints_agent.eval.personal.recording import (
    HistoryMemory,
    ingest_history,
    open_memory,
    temporary_memory,
)
from fints_agent.eval.personal.summary import (
    PersonalRun,
    decided_by,
    machine_info,
    summarize_outcomes,
)

__all__ = [
    "HISTORY_CACHE",
    "LATENCY_BASIS",
    "METHODS",
    "HistoryMemory",
    "PersonalRun",
    "TurnOutcome",
    "answer_turns",
    "by_corrections",
    "corrections_records",
    "decided_by",
    "domain_history_counts",
    "follow_label",
    "history_cache_dir",
    "history_memory",
    "history_store_key",
    "ingest_history",
    "knn_call",
    "machine_info",
    "old_preference_call",
    "open_memory",
    "personalization_of",
    "run_corrections",
    "run_personal",
    "select_test_records",
    "summarize_outcomes",
    "temporary_memory",
]
