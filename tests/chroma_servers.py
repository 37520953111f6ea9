"""Chroma servers that a test starts, stops and restarts itself, on a free loopback port.

- ``ChromaServer.rust(path)``: the ``chroma run`` server of the chromadb package.
- ``ChromaServer.python(path, env)``: Chroma's Python server as the docs run it for
  authentication (``uvicorn fints_agent.chroma_server:app``; ``CHROMA_SERVER_AUTHN_PROVIDER``
  and ``CHROMA_SERVER_AUTHN_CREDENTIALS`` in ``env``).

The session-wide server of ``conftest.py`` is started the same way (its helpers are reused).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import _chroma_cli, _free_port

TOKEN_AUTHN = "chromadb.auth.token_authn.TokenAuthenticationServerProvider"
BASIC_AUTHN = "chromadb.auth.basic_authn.BasicAuthenticationServerProvider"


class ChromaServer:
    """One Chroma server process on ``127.0.0.1``; ``data`` is its persistence directory.

    Args:
        argv: The command, with ``{port}`` and ``{data}`` filled in at each start.
        path: A folder for the data and the log.
        env: Extra environment variables of the server.
    """

    def __init__(self, argv: list[str], path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.path = path
        self.data = path / "data"
        self.env = {"ANONYMIZED_TELEMETRY": "False", **(env or {})}
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = path / "server.log"

    @classmethod
    def rust(cls, path: Path) -> ChromaServer:
        """A ``chroma run`` server (skips the test when the CLI is not installed)."""
        cli = _chroma_cli()
        if cli is None:
            pytest.skip("the chroma CLI is not installed")
        argv = [cli, "run", "--path", "{data}", "--host", "127.0.0.1", "--port", "{port}"]
        return cls(argv, path)

    @classmethod
    def python(cls, path: Path, env: dict[str, str]) -> ChromaServer:
        """Chroma's Python server, with ``env`` (its authentication settings)."""
        app = "fints_agent.chroma_server:app"
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
        argv += ["--port", "{port}", "--log-level", "warning"]
        env = {"IS_PERSISTENT": "1", "PERSIST_DIRECTORY": "{data}", **env}
        return cls(argv, path, env)

    def start(self, timeout: float = 90.0) -> ChromaServer:
        """Start the server and wait for its heartbeat."""
        argv = [self._fill(a) for a in self.argv]
        env = {**os.environ, **{k: self._fill(v) for k, v in self.env.items()}}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"chroma server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"chroma server did not answer its heartbeat within {timeout} s")
            time.sleep(0.1)

    def _fill(self, text: str) -> str:
        return text.replace("{port}", str(self.port)).replace("{data}", str(self.data))

    def stop(self) -> None:
        """Stop the server (its data stays)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, *, wipe: bool = False) -> None:
        """Stop and start again on the same port; ``wipe``: on an empty data directory."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data, ignore_errors=True)
        self.start()
