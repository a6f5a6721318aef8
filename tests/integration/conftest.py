"""Fixtures of every integration test: a real `headwater serve` process on a loopback port.

`make_server` lives here, not in `server/`, so the client-API suite can run the same
tests on the embedded broker and on a server (`test_client_api.py`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")
_READY = re.compile(r"serving Kafka on ([\d.]+):(\d+)")


class ServerProcess:
    """`headwater --data DIR serve --kafka 127.0.0.1:PORT`, started and stopped by tests."""

    def __init__(self, data_dir: str, log_path: str, *extra: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra = list(extra)
        self.port = 0
        self.ready_lines = ""
        self.proc: subprocess.Popen[str] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [
                HEADWATER,
                "--data",
                self.data_dir,
                "serve",
                "--kafka",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        waiting_for_http = "--http" in self.extra
        self.ready_lines = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.ready_lines += line
            match = _READY.search(line)
            if match:
                self.port = int(match.group(2))
            if self.port and (not waiting_for_http or "serving HTTP" in self.ready_lines):
                return self
        self.proc.kill()
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(30)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code

    def restart(self) -> ServerProcess:
        """Stop gracefully and start again on the same port and data."""
        self.stop()
        return self.start()


@pytest.fixture
def make_server(tmp_path) -> Iterator:
    servers: list[ServerProcess] = []

    def make(*extra: str, data_dir: str | None = None) -> ServerProcess:
        n = len(servers)
        server = ServerProcess(
            data_dir or str(tmp_path / f"data{n}"), str(tmp_path / f"server{n}.log"), *extra
        )
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
