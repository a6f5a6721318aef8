"""`headwater serve` as a process: graceful stop, one owner per data directory, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from tests.integration.server.rawclient import (
    Err,
    RawClient,
    create_topic,
    fetch,
    fetch_body,
    init_producer_id,
    latest_offset,
    produce,
    produce_body,
    records,
)

from headwater.records import decode_batches

PRODUCE, FETCH, OFFSET_COMMIT, OFFSET_FETCH = 0, 1, 8, 9
HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_gracefully(server, sig):
    with RawClient(server.port) as idle, RawClient(server.port) as polling:
        create_topic(idle, "quiet")
        # A long poll in progress must not hold the shutdown up.
        polling.send(FETCH, 11, fetch_body([("quiet", 0, 0)], max_wait_ms=30_000, min_bytes=1))
        assert not polling.readable_within(0.2)

        started = time.monotonic()
        assert server.stop(sig) == 0
        assert time.monotonic() - started < 10
        assert idle.closed_by_server(timeout=1)
        assert polling.closed_by_server(timeout=1)
    assert "shutting down" in server.log()


def test_shutdown_with_clients_connected_logs_no_error(server):
    with RawClient(server.port) as idle, RawClient(server.port) as polling:
        create_topic(idle, "quiet")
        polling.send(FETCH, 11, fetch_body([("quiet", 0, 0)], max_wait_ms=30_000, min_bytes=1))
        assert not polling.readable_within(0.2)
        assert server.stop() == 0
    errors = [line for line in server.log().splitlines() if " ERROR " in line]
    assert not errors, server.log()


def test_second_server_on_the_same_data_directory_is_refused(server):
    second = subprocess.run(
        [HEADWATER, "--data", server.data_dir, "serve", "--kafka", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1, second
    assert f"locked by process {server.proc.pid}" in second.stderr, second.stderr
    assert "serving Kafka" not in second.stdout
    # The first one is unaffected.
    with RawClient(server.port) as client:
        create_topic(client, "still-mine")


def test_acknowledged_data_survives_sigkill(server):
    """acks=-1 data, committed offsets and idempotent-producer state survive a SIGKILL."""
    acked: dict[int, dict[int, bytes]] = {0: {}, 1: {}}
    with RawClient(server.port) as client:
        create_topic(client, "crash", partitions=2)
        for i in range(60):
            value = b"v%d" % i
            answer = produce(client, "crash", i % 2, records(value))
            assert answer["error_code"] == Err.NONE, answer
            acked[i % 2][answer["base_offset"]] = value
        pid, _ = init_producer_id(client)
        retry = records(b"idem", producer_id=pid, producer_epoch=0, base_sequence=0)
        idem_offset = produce(client, "crash", 0, retry)["base_offset"]
        acked[0][idem_offset] = b"idem"
        assert commit(client, "crash-group", 17, "kept") == Err.NONE

        # Twenty more in flight, unread, when the process dies: they may or may not land.
        for i in range(60, 80):
            client.send(PRODUCE, 8, produce_body("crash", 0, records(b"v%d" % i)))
        server.stop(signal.SIGKILL)

    assert server.proc.returncode == -signal.SIGKILL
    server.start()

    with RawClient(server.port) as client:
        for partition, expected in acked.items():
            stored = read_values(client, "crash", partition)
            for offset, value in expected.items():
                assert stored.get(offset) == value, f"acked offset {offset} lost or changed"
            # Whatever else landed is the unacknowledged tail, in order, without holes.
            extra = [stored[o] for o in sorted(stored) if o not in expected]
            assert extra == [b"v%d" % i for i in range(60, 60 + len(extra))]
            assert sorted(stored) == list(range(len(stored)))
        assert committed(client, "crash-group") == (17, "kept")
        end = latest_offset(client, "crash", 0)
        answer = produce(client, "crash", 0, retry)
        assert (answer["error_code"], answer["base_offset"]) == (Err.NONE, idem_offset), answer
        assert latest_offset(client, "crash", 0) == end, "the retry was appended again"


def read_values(client: RawClient, topic: str, partition: int) -> dict[int, bytes]:
    """Every record of one partition, offset -> value."""
    values: dict[int, bytes] = {}
    offset = 0
    while True:
        [answer] = fetch(client, [(topic, partition, offset)])
        assert answer["error_code"] == Err.NONE, answer
        if not answer["records"]:
            return values
        for record in decode_batches(bytes(answer["records"])):
            values[record.offset] = record.value
            offset = record.offset + 1


def commit(client: RawClient, group: str, offset: int, metadata: str) -> int:
    body = client.request(
        OFFSET_COMMIT,
        2,
        {
            "group_id": group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": "crash",
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": offset,
                            "committed_metadata": metadata,
                        }
                    ],
                }
            ],
        },
    )
    return int(body["topics"][0]["partitions"][0]["error_code"])


def committed(client: RawClient, group: str) -> tuple[int, str]:
    body = client.request(
        OFFSET_FETCH,
        1,
        {"group_id": group, "topics": [{"name": "crash", "partition_indexes": [0]}]},
    )
    [partition] = body["topics"][0]["partitions"]
    return partition["committed_offset"], partition["metadata"]
