"""Embedded-only client behaviour: failing and stalling storage (FaultyStorage).

The backend-agnostic Producer and Consumer tests run on both backends in
test_client_api.py.
"""

import errno

import pytest

import headwater
from headwater.errors import StorageError
from headwater.log.faulty import FaultyStorage


def test_futures_report_fsync_failures_and_nothing_becomes_visible(tmp_path) -> None:
    storage = FaultyStorage()
    with headwater.open(str(tmp_path / "d"), storage=storage) as hw:
        hw.create_topic("t")
        producer = hw.producer()
        producer.send("t", b"first").result()
        storage.fail("fsync", errno.EIO)
        future = producer.send("t", b"second")
        with pytest.raises(StorageError, match="fsync"):
            future.result(10)
        assert hw.describe_topic("t").partitions[0].high_watermark == 1
        callbacks = []
        producer.send("t", b"third").add_done_callback(lambda f: callbacks.append(f.exception()))
        producer.flush()
        assert isinstance(callbacks[0], StorageError)


def test_send_blocks_when_the_buffer_is_full_and_times_out(tmp_path) -> None:
    storage = FaultyStorage()
    with headwater.open(str(tmp_path / "d"), storage=storage) as hw:
        hw.create_topic("t")
        producer = hw.producer(buffer_memory=1000, max_block_ms=300, linger_ms=0)
        for _ in range(20):
            producer.send("t", b"x" * 100)  # backpressure: blocks until acknowledged
        producer.flush()
        assert hw.describe_topic("t").partitions[0].log_end_offset == 20
        # A disk that stops answering: the buffer fills and send() gives up in time.
        gate = storage.hold("fsync")

        def fill() -> None:
            for _ in range(100):
                producer.send("t", b"y" * 100)

        with pytest.raises(TimeoutError, match="buffer space"):
            fill()
        gate.set()
        producer.flush()
