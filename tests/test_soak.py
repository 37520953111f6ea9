"""The memory soak script (tools/soak_memory.py), run briefly: no write lost, no user's
trajectory in another user's results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "soak_memory.py"


def test_soak_embedded_loses_nothing_and_crosses_no_user(tmp_path: Path) -> None:
    args = ["--threads", "2", "--users", "2", "--seconds", "3", "--json"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["store"] == "embedded"
    assert result["lost"] == 0 and result["cross_user"] == 0
    assert result["errors"] == {}
    assert result["records"] > 0 and result["retrievals"] > 0
    assert result["vectors_compared"] == result["records"]
