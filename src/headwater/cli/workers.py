"""`headwater run app.py --workers N`: N worker processes of one distributed app.

Workers need a broker every process can reach. For an app on a data directory this
starts `headwater serve` on it (on a free loopback port) for as long as the workers
run; with `--broker kafka://...` they use that cluster. Each worker is
`headwater run app.py --worker` in its own process. A worker that dies is not
restarted: the others take over its partitions once the group's session timeout
passes, and its open transaction is aborted at once (its transactional id is fenced)
so that readers of its outputs are not held back. SIGINT/SIGTERM stop every worker
after its final commit, then the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from headwater.cli.exit_codes import Terminated
from headwater.cli.signals import LAUNCHER_ENV, sigterm_raises
from headwater.client.kafka import connect
from headwater.errors import ConfigError, HeadwaterError
from headwater.stream.app import App

__all__ = ["fence_worker", "run_workers"]

_SERVER_START_S = 30.0


def run_workers(app: App, app_file: str, workers: int, extra: list[str]) -> int:
    """Run `workers` processes of `app` (from `app_file`); the worst exit code."""
    if workers < 1:
        msg = f"--workers {workers}: give at least 1"
        raise ConfigError(msg)
    broker = app.broker
    if not isinstance(broker, str):
        msg = "--workers needs the app's broker as a data directory or kafka:// address"
        raise ConfigError(msg)
    with _server_for(broker) as address:
        run_id = uuid.uuid4().hex[:8]
        ids = [f"{run_id}-{k}" for k in range(workers)]
        procs = [_start_worker(app_file, address, worker_id, extra) for worker_id in ids]
        print(f"{app.name}: {workers} workers on {address}", file=sys.stderr, flush=True)
        with sigterm_raises():
            codes = _supervise(app, address, dict(zip(ids, procs, strict=True)))
    return max(codes, key=abs, default=0)


@contextlib.contextmanager
def _server_for(broker: str) -> Iterator[str]:
    """The kafka:// address workers use: `broker` itself, or a server started on it."""
    if broker.startswith("kafka://"):
        yield broker
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "headwater", "--data", broker, "serve", "--kafka", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        env=_launched_env(),
    )
    try:
        yield f"kafka://{_server_address(server)}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _server_address(server: subprocess.Popen[str]) -> str:
    """Read the server's "headwater serving Kafka on HOST:PORT" line."""
    assert server.stdout is not None  # noqa: S101 - stdout=PIPE
    deadline = time.monotonic() + _SERVER_START_S
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        if line.startswith("headwater serving Kafka on "):
            threading.Thread(target=server.stdout.read, daemon=True).start()  # drain
            return line.rsplit(" ", 1)[1].strip()
    server.kill()
    msg = "headwater serve did not start for the workers (see its output above)"
    raise HeadwaterError(msg)


def _start_worker(
    app_file: str, address: str, worker_id: str, extra: list[str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headwater",
            "--broker",
            address,
            "run",
            app_file,
            "--worker",
            worker_id,
            *extra,
        ],
        start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
        env=_launched_env(),
    )


def _launched_env() -> dict[str, str]:
    """The environment of a process this launcher starts: it stops when we die."""
    return {**os.environ, LAUNCHER_ENV: str(os.getpid())}


def _supervise(app: App, address: str, procs: dict[str, subprocess.Popen[bytes]]) -> list[int]:
    """Wait for the workers; stop them all on SIGINT/SIGTERM; fence the ones that die."""
    codes: dict[str, int] = {}
    try:
        while len(codes) < len(procs):
            for worker_id, proc in procs.items():
                code = proc.poll()
                if code is None or worker_id in codes:
                    continue
                codes[worker_id] = code
                if code != 0:
                    print(
                        f"{app.name}: worker {worker_id} ended with {code}; the others take "
                        "over its partitions",
                        file=sys.stderr,
                        flush=True,
                    )
                    if app.exactly_once:
                        fence_worker(app.name, address, worker_id)
            time.sleep(0.2)
    except (KeyboardInterrupt, Terminated):
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for worker_id, proc in procs.items():
            codes.setdefault(worker_id, proc.wait())
    return list(codes.values())


def fence_worker(app: str, address: str, worker_id: str) -> None:
    """Abort a dead worker's open transaction now rather than at its timeout.

    Readers with read_committed wait at its first record until it ends; a new
    producer with the worker's transactional id fences it and aborts it.
    """
    transactional_id = f"{app}-{worker_id}"
    try:
        with connect(address) as client:
            producer = client.producer(transactional_id=transactional_id)
            try:
                producer.init_transactions()
            finally:
                producer.close()
    except HeadwaterError as error:
        print(f"could not fence {transactional_id}: {error}", file=sys.stderr, flush=True)
