from headwater.broker.producer_ids import ProducerIdAllocator
from headwater.log import Storage


def test_producer_ids_never_repeat_across_restarts(tmp_path) -> None:
    (tmp_path / "__meta").mkdir()
    first = ProducerIdAllocator(str(tmp_path), Storage())
    ids = [first.allocate() for _ in range(5)]
    second = ProducerIdAllocator(str(tmp_path), Storage())
    assert second.allocate() > max(ids)
    assert ids == [0, 1, 2, 3, 4]
