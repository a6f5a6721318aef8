"""Memory cost of idle client connections to `headwater serve` (issue #3).

Starts a server, measures its RSS, opens `--connections` TCP connections that each do
one ApiVersions round trip (so every connection has been served) and then stay idle,
measures the RSS again, and prints the difference. Goal: 1,000 idle connections cost
under 100 MB.

usage: python bench/idle_connections.py [--connections 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil

from headwater.protocol import NEED_DATA, ClientConnection

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")


def api_versions(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    client = ClientConnection()
    sock.sendall(client.send_request(18, 3, 1, "idle-bench", {}))
    while True:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("server closed an idle connection")
        client.receive_data(data)
        if client.next_event() is not NEED_DATA:
            return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 256), hard))
    scratch = tempfile.mkdtemp(prefix="hw-idle-")
    proc = subprocess.Popen(
        [HEADWATER, "--data", os.path.join(scratch, "d"), "serve", "--kafka", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(re.findall(r":(\d+)", proc.stdout.readline())[-1])
        server = psutil.Process(proc.pid)
        api_versions(port).close()
        time.sleep(0.5)
        before = server.memory_info().rss
        socks = [api_versions(port) for _ in range(args.connections)]
        time.sleep(1.0)
        after = server.memory_info().rss
        print(
            f"{args.connections} idle connections: server RSS {before / 2**20:.1f} MB -> "
            f"{after / 2**20:.1f} MB, +{(after - before) / 2**20:.1f} MB "
            f"({(after - before) / args.connections / 1024:.1f} KB each)"
        )
        for sock in socks:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
