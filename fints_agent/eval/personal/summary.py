"""Summaries of answered turns: accuracy, breakdowns, the machine, and per-turn rows.

Example:
    >>> summary = summarize_outcomes(outcomes)
    >>> summary["call_acc"], summary["by_decider"], summary["changed_preference"]
"""

from __future__ import annotations

import json
import os
import platform
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fints_agent.eval.scoring import summarize

if TYPE_CHECKING:
    from fints_agent.eval.dataset import PersonalRecord
    from fints_agent.eval.personal.answering import TurnOutcome

__all__ = ["PersonalRun", "decided_by", "machine_info", "summarize_outcomes"]


def machine_info() -> dict[str, Any]:
    """The machine a run used: OS, CPU, core count, torch threads and version."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def decided_by(record: PersonalRecord) -> str:
    """Whether the user's preference or the request decides a record's tool.

    ``"preference"`` when a rejected call names another tool (the record marks another tool as
    plausible for the request, so the user's preference decides), else ``"request"``.
    """
    from fints_agent.memory.negatives import contrasts_tool  # keeps torch out of this import

    rejected = [{"name": r.name} for r in record.rejected]
    return "preference" if contrasts_tool({"name": record.chosen.name}, rejected) else "request"


def _rates(outcomes: Sequence[TurnOutcome]) -> dict[str, Any]:
    s = summarize([o.score for o in outcomes])
    return {k: s[k] for k in ("n", "function_acc", "arg_acc", "call_acc", "valid_rate")}


def summarize_outcomes(
    outcomes: Sequence[TurnOutcome], follows: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Accuracy, validity, prompt size, latency, and breakdowns by user kind and preference.

    Args:
        outcomes: Answered turns.
        follows: Per outcome index, ``"new"``/``"old"``/``"neither"`` for turns where a
            changed preference matters (see :func:`follow_label`).

    Returns:
        :func:`~fints_agent.eval.scoring.summarize` fields plus ``by_user_kind``,
        ``by_decider`` (turns whose tool the preference or the request decides, see
        :func:`decided_by`) and
        ``changed_preference`` (``n``, ``follows_new``, ``follows_old`` rates).
    """
    tokens = [o.prompt_tokens for o in outcomes if o.prompt_tokens]
    summary = summarize([o.score for o in outcomes], tokens, [o.latency_s for o in outcomes])
    kinds: dict[str, list[TurnOutcome]] = defaultdict(list)
    for o in outcomes:
        kinds[str((o.record.meta or {}).get("user_kind", "unknown"))].append(o)
    summary["by_user_kind"] = {kind: _rates(group) for kind, group in sorted(kinds.items())}
    deciders: dict[str, list[TurnOutcome]] = defaultdict(list)
    for o in outcomes:
        deciders[decided_by(o.record)].append(o)
    summary["by_decider"] = {k: _rates(group) for k, group in sorted(deciders.items())}
    labels = list((follows or {}).values())
    summary["changed_preference"] = {
        "n": len(labels),
        "follows_new": round(labels.count("new") / len(labels), 4) if labels else None,
        "follows_old": round(labels.count("old") / len(labels), 4) if labels else None,
    }
    return summary


@dataclass
class PersonalRun:
    """A finished benchmark run.

    Attributes:
        summary: The JSON summary (what the command prints).
        outcomes: Every answered turn.
        history_counts: Per user, history records per domain.
        follows: Per outcome index, whether a changed preference was followed.
    """

    summary: dict[str, Any]
    outcomes: list[TurnOutcome]
    history_counts: dict[str, dict[str, int]]
    follows: dict[int, str]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per answered turn (for plots)."""
        out = []
        for i, o in enumerate(self.outcomes):
            r = o.record
            meta = r.meta or {}
            domain = str(meta.get("domain", ""))
            counts = self.history_counts.get(r.user_id, {})
            out.append(
                {
                    "method": self.summary.get("method"),
                    "user_id": r.user_id,
                    "turn": r.turn,
                    "user_kind": meta.get("user_kind"),
                    "domain": domain,
                    "family": meta.get("family"),
                    "phase": meta.get("phase"),
                    "n_history_domain": counts.get(domain, 0),
                    "n_history": sum(counts.values()),
                    "function": o.score.function,
                    "args": o.score.args,
                    "call": o.score.call,
                    "valid": o.score.valid,
                    "error": o.score.error,
                    "follows": self.follows.get(i),
                    "predicted": o.call,
                    "gold": r.chosen.as_dict(),
                    "prompt_tokens": o.prompt_tokens,
                    "latency_s": round(o.latency_s, 4),
                    "steered": bool(o.steering.get("steered", False)),
                    "trajectories": [t.get("id") for t in o.steering.get("trajectories", [])],
                }
            )
        return out

    def write_rows(self, path: str | Path) -> None:
        """Writes :meth:`rows` as JSON Lines."""
        with open(path, "w", encoding="utf-8") as handle:
            for row in self.rows():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
