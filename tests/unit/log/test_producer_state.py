import pytest

from headwater.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from headwater.log import LogConfig, PartitionLog
from headwater.records import build_batch


def idem(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    records = [(1000 + i, None, b"v%d" % i, []) for i in range(n)]
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_in_sequence_batches_append_and_retries_get_original_offsets(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    first = log.append(idem(7, 0, 0))
    second = log.append(idem(7, 0, 2))
    retry = log.append(idem(7, 0, 0))
    assert (retry.base_offset, retry.last_offset, retry.duplicate) == (0, 1, True)
    assert not first.duplicate
    assert second.base_offset == 2
    assert log.log_end_offset == 4  # nothing appended for the retry
    log.close()


def test_only_the_last_five_batches_are_recognised_as_duplicates(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    for i in range(6):
        log.append(idem(1, 0, 2 * i))
    assert log.append(idem(1, 0, 2)).duplicate  # 2nd batch: still cached
    with pytest.raises(OutOfOrderSequenceError, match="expected 12"):
        log.append(idem(1, 0, 0))  # 1st batch fell out of the cache
    log.close()


def test_gaps_and_old_epochs_are_refused(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), name="t-0")
    log.append(idem(3, 1, 0))
    with pytest.raises(OutOfOrderSequenceError, match="sent sequence 5 to t-0, expected 2"):
        log.append(idem(3, 1, 5))
    with pytest.raises(InvalidProducerEpochError, match="fenced"):
        log.append(idem(3, 0, 2))
    with pytest.raises(OutOfOrderSequenceError, match="not 0"):
        log.append(idem(3, 2, 4))
    assert log.append(idem(3, 2, 0)).base_offset == 2  # a new epoch restarts at 0
    assert log.log_end_offset == 4
    log.close()


def test_unknown_producers_may_start_anywhere(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    assert log.append(idem(9, 0, 1234)).base_offset == 0
    assert log.append(idem(9, 0, 1236)).base_offset == 2
    log.close()


def test_sequences_wrap_after_int32_max(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    log.append(idem(4, 0, 2**31 - 2, n=2))
    assert log.append(idem(4, 0, 0)).base_offset == 2
    log.close()


@pytest.mark.parametrize("clean_close", [True, False])
def test_producer_state_survives_restart(tmp_path, clean_close: bool) -> None:
    config = LogConfig(segment_bytes=1024)
    log = PartitionLog(str(tmp_path / "p"), config)
    for i in range(30):
        log.append(idem(5, 0, 2 * i))
    if clean_close:
        log.close()
    reopened = PartitionLog(str(tmp_path / "p"), config)
    retry = reopened.append(idem(5, 0, 58))
    assert retry.duplicate
    assert retry.base_offset == 58
    with pytest.raises(OutOfOrderSequenceError):
        reopened.append(idem(5, 0, 100))
    assert reopened.append(idem(5, 0, 60)).base_offset == 60
    reopened.close()
    if not clean_close:
        log.close()
