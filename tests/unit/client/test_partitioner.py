import pytest

from headwater.client.partitioner import murmur2, partition_for_key

# Known answers from Kafka's own test of Utils.murmur2.
KNOWN = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KNOWN.items())
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_is_positive_hash_modulo_partitions() -> None:
    for key, h in KNOWN.items():
        assert partition_for_key(key, 7) == (h & 0x7FFFFFFF) % 7
