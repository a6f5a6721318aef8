"""The transaction coordinator's rules, on real files, with recording ports and a fake clock."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from headwater.broker import OffsetAndMetadata
from headwater.broker.producer_ids import ProducerIdAllocator
from headwater.broker.transaction_store import TransactionMetadata, TransactionStore
from headwater.broker.transactions import TransactionCoordinator, TransactionState
from headwater.errors import ErrorCode, LogClosedError, StorageError, UnknownTopicError
from headwater.log import Storage
from headwater.log.faulty import FaultyStorage

NONE = ErrorCode.NONE
S = TransactionState
T0, T1, U0 = ("t", 0), ("t", 1), ("u", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Crash(BaseException):
    """The process dies in the middle of a port call."""


class Ports:
    """Recording write_marker / commit_offsets, breakable on demand."""

    def __init__(self) -> None:
        self.markers: list[tuple[str, int, int, int, bool]] = []
        self.committed: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self.broken: set[tuple[str, int]] = set()  # partitions whose marker write fails
        self.gone: set[tuple[str, int]] = set()  # partitions that no longer exist
        self.crash_after: int | None = None  # die after this many markers

    def write_marker(self, topic: str, partition: int, pid: int, epoch: int, commit: bool) -> None:
        if (topic, partition) in self.gone:
            raise UnknownTopicError(topic, partition)
        if (topic, partition) in self.broken:
            raise OSError(5, "Input/output error", f"{topic}-{partition}")
        if self.crash_after is not None and len(self.markers) >= self.crash_after:
            raise Crash
        self.markers.append((topic, partition, pid, epoch, commit))

    def commit_offsets(self, group: str, offsets: dict[tuple[str, int], OffsetAndMetadata]) -> None:
        self.committed.setdefault(group, {}).update(offsets)


def make(
    path, ports: Ports | None = None, clock: Clock | None = None, storage: Storage | None = None
) -> tuple[TransactionCoordinator, Ports, Clock]:
    ports = ports or Ports()
    clock = clock or Clock()
    storage = storage or Storage()
    coord = TransactionCoordinator(
        str(path),
        storage,
        ProducerIdAllocator(str(path), storage),
        ports.write_marker,
        ports.commit_offsets,
        clock=clock,
        wall_clock=lambda: 1_700_000_000.0,
    )
    return coord, ports, clock


def om(offset: int) -> OffsetAndMetadata:
    return OffsetAndMetadata(offset, "m", -1, 1)


def state(coord: TransactionCoordinator, tid: str = "tx") -> TransactionMetadata:
    txn = coord.describe_transaction(tid)
    assert txn is not None
    return txn


def begin(coord, tid="tx", partitions=(T0, T1), timeout_ms=60_000):
    error, pid, epoch = coord.init_producer_id(tid, timeout_ms)
    assert error is NONE
    assert coord.add_partitions(tid, pid, epoch, list(partitions)) == dict.fromkeys(
        partitions, NONE
    )
    return pid, epoch


# -- the happy paths -------------------------------------------------------------------


def test_a_new_transactional_id_gets_a_new_producer_id_at_epoch_0(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    assert coord.init_producer_id("a", 60_000) == (NONE, 0, 0)
    assert coord.init_producer_id("b", 60_000) == (NONE, 1, 0)
    assert coord.init_producer_id(None, 60_000) == (NONE, 2, 0)  # idempotence only
    assert [t.transactional_id for t in coord.describe()] == ["a", "b"]
    assert state(coord, "a").state is S.EMPTY
    assert ports.markers == []


def test_commit_writes_a_marker_per_partition_and_applies_the_staged_offsets(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord)
    assert coord.add_offsets("tx", pid, epoch, "g") is NONE
    staged = {("in", 0): om(5), ("in", 1): om(7)}
    assert coord.txn_offset_commit("tx", pid, epoch, "g", staged) == dict.fromkeys(staged, NONE)
    assert coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(6)}) == {("in", 0): NONE}
    txn = state(coord)
    assert (txn.state, txn.partitions, txn.groups) == (S.ONGOING, {T0, T1}, {"g"})
    assert coord.has_pending_offsets("g")
    assert ports.committed == {}  # staged, not committed

    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    assert ports.markers == [("t", 0, pid, epoch, True), ("t", 1, pid, epoch, True)]
    assert ports.committed == {"g": {("in", 0): om(6), ("in", 1): om(7)}}
    txn = state(coord)
    assert (txn.state, txn.partitions, txn.pending_offsets) == (S.COMPLETE_COMMIT, set(), {})
    assert not coord.has_pending_offsets("g")


def test_abort_writes_abort_markers_and_drops_the_staged_offsets(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[U0])
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(5)})
    assert coord.end_txn("tx", pid, epoch, commit=False) is NONE
    assert ports.markers == [("u", 0, pid, epoch, False)]
    assert ports.committed == {}
    assert state(coord).state is S.COMPLETE_ABORT


def test_state_transitions_through_two_transactions(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    _, pid, epoch = coord.init_producer_id("tx", 60_000)
    seen = [state(coord).state]
    coord.add_partitions("tx", pid, epoch, [T0])
    seen.append(state(coord).state)
    coord.add_partitions("tx", pid, epoch, [T0])  # already in: nothing to write
    coord.end_txn("tx", pid, epoch, commit=True)
    seen.append(state(coord).state)
    coord.add_offsets("tx", pid, epoch, "g")  # a group alone starts a transaction too
    seen.append(state(coord).state)
    coord.end_txn("tx", pid, epoch, commit=False)
    seen.append(state(coord).state)
    coord.init_producer_id("tx", 60_000)
    seen.append(state(coord).state)
    assert seen == [
        S.EMPTY,
        S.ONGOING,
        S.COMPLETE_COMMIT,
        S.ONGOING,
        S.COMPLETE_ABORT,
        S.EMPTY,
    ]


def test_a_new_transaction_starts_with_only_its_own_partitions(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0, T1])
    coord.end_txn("tx", pid, epoch, commit=True)
    coord.add_partitions("tx", pid, epoch, [U0])
    coord.end_txn("tx", pid, epoch, commit=True)
    assert [m[:2] for m in ports.markers] == [T0, T1, U0]


def test_retried_end_txn_is_idempotent_and_a_contradicting_one_is_refused(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord)
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    assert coord.end_txn("tx", pid, epoch, commit=False) is ErrorCode.INVALID_TXN_STATE
    coord.add_partitions("tx", pid, epoch, [T0])
    assert coord.end_txn("tx", pid, epoch, commit=False) is NONE
    assert coord.end_txn("tx", pid, epoch, commit=False) is NONE
    assert coord.end_txn("tx", pid, epoch, commit=True) is ErrorCode.INVALID_TXN_STATE
    assert len(ports.markers) == 3


def test_ending_an_empty_transaction_writes_nothing(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    _, pid, epoch = coord.init_producer_id("tx", 60_000)
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    assert coord.end_txn("tx", pid, epoch, commit=False) is NONE
    assert state(coord).state is S.EMPTY
    assert ports.markers == []


# -- fencing ---------------------------------------------------------------------------


def test_a_second_init_aborts_the_open_transaction_and_fences_the_first_instance(
    tmp_path,
) -> None:
    coord, ports, _ = make(tmp_path)
    pid, old = begin(coord)
    coord.add_offsets("tx", pid, old, "g")
    coord.txn_offset_commit("tx", pid, old, "g", {("in", 0): om(3)})
    assert coord.init_producer_id("tx", 60_000) == (NONE, pid, 2)
    # The abort markers carry epoch 1: the partitions fence epoch 0 from then on.
    assert ports.markers == [("t", 0, pid, 1, False), ("t", 1, pid, 1, False)]
    assert ports.committed == {}
    fenced = ErrorCode.PRODUCER_FENCED
    assert coord.add_partitions("tx", pid, old, [T0]) == {T0: fenced}
    assert coord.add_offsets("tx", pid, old, "g") is fenced
    assert coord.txn_offset_commit("tx", pid, old, "g", {("in", 0): om(4)}) == {("in", 0): fenced}
    assert coord.end_txn("tx", pid, old, commit=True) is fenced
    assert coord.end_txn("tx", pid, old, commit=False) is fenced
    assert coord.end_txn("tx", pid, 3, commit=False) is fenced  # a future epoch too (Kafka)
    assert coord.init_producer_id("tx", 60_000, pid, old).error is fenced  # KIP-360
    assert state(coord).state is S.EMPTY


def test_init_without_an_open_transaction_bumps_the_epoch_once(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    assert [coord.init_producer_id("tx", 60_000).producer_epoch for _ in range(3)] == [0, 1, 2]
    pid, epoch = state(coord).producer_id, 2
    coord.add_partitions("tx", pid, epoch, [T0])
    coord.end_txn("tx", pid, epoch, commit=True)
    assert coord.init_producer_id("tx", 60_000) == (NONE, pid, 3)
    assert len(ports.markers) == 1


def test_init_takes_the_new_timeout(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    coord.init_producer_id("tx", 60_000)
    coord.init_producer_id("tx", 5_000)
    assert state(coord).timeout_ms == 5_000


def test_kip_360_the_current_instance_bumps_and_its_retry_gets_the_same_answer(
    tmp_path,
) -> None:
    coord, _, _ = make(tmp_path)
    _, pid, _ = coord.init_producer_id("tx", 60_000)
    assert coord.init_producer_id("tx", 60_000, pid, 0) == (NONE, pid, 1)
    assert coord.init_producer_id("tx", 60_000, pid, 0) == (NONE, pid, 1)  # answer was lost
    assert coord.init_producer_id("tx", 60_000, pid, 1) == (NONE, pid, 2)
    assert coord.init_producer_id("tx", 60_000, pid, 7).error is ErrorCode.PRODUCER_FENCED
    assert coord.init_producer_id("tx", 60_000, pid + 1, 2).error is ErrorCode.PRODUCER_FENCED
    assert coord.init_producer_id("tx", 60_000) == (NONE, pid, 3)  # a new instance ...
    assert coord.init_producer_id("tx", 60_000, pid, 2).error is ErrorCode.PRODUCER_FENCED
    # ... so the old one can no longer retry its way in.


def test_kip_360_while_a_transaction_is_open_aborts_it_first(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0])
    assert coord.init_producer_id("tx", 60_000, pid, epoch) == (NONE, pid, 2)
    assert ports.markers == [("t", 0, pid, 1, False)]
    assert coord.init_producer_id("tx", 60_000, pid, epoch) == (NONE, pid, 2)


def test_kip_360_for_an_unknown_transactional_id_starts_afresh(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    assert coord.init_producer_id("tx", 60_000, 55, 3) == (NONE, 0, 0)


def test_an_exhausted_epoch_moves_the_id_to_a_new_producer_id(tmp_path) -> None:
    TransactionStore(str(tmp_path), Storage()).save(
        TransactionMetadata("tx", producer_id=500, producer_epoch=32765, timeout_ms=60_000)
    )
    coord, _, _ = make(tmp_path)
    assert coord.init_producer_id("tx", 60_000) == (NONE, 500, 32766)
    error, new_pid, epoch = coord.init_producer_id("tx", 60_000)
    assert (error, epoch) == (NONE, 0)
    assert new_pid != 500
    txn = state(coord)
    assert (txn.last_producer_id, txn.producer_id) == (500, new_pid)
    assert coord.producer_state(500) is None
    assert coord.producer_state(new_pid) == txn


def test_kip_360_retry_across_a_producer_id_rotation(tmp_path) -> None:
    TransactionStore(str(tmp_path), Storage()).save(
        TransactionMetadata("tx", producer_id=500, producer_epoch=32766, timeout_ms=60_000)
    )
    coord, _, _ = make(tmp_path)
    error, new_pid, epoch = coord.init_producer_id("tx", 60_000, 500, 32766)
    assert (error, epoch) == (NONE, 0)
    assert coord.init_producer_id("tx", 60_000, 500, 32766) == (NONE, new_pid, 0)


def test_the_coordinator_can_fence_at_the_last_usable_epoch(tmp_path) -> None:
    TransactionStore(str(tmp_path), Storage()).save(
        TransactionMetadata("tx", producer_id=500, producer_epoch=32766, timeout_ms=1_000)
    )
    coord, ports, clock = make(tmp_path)
    coord.add_partitions("tx", 500, 32766, [T0])
    assert coord.expire(clock.now + 2) == ["tx"]
    assert ports.markers == [("t", 0, 500, 32767, False)]
    error, new_pid, epoch = coord.init_producer_id("tx", 60_000)
    assert (error, epoch) == (NONE, 0)
    assert new_pid != 500


# -- timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [0, -1, 900_001])
def test_a_timeout_out_of_range_is_refused(tmp_path, timeout_ms) -> None:
    coord, _, _ = make(tmp_path)
    assert coord.init_producer_id("tx", timeout_ms) == (
        ErrorCode.INVALID_TRANSACTION_TIMEOUT,
        -1,
        -1,
    )
    assert coord.describe() == []


def test_the_maximum_timeout_is_allowed_and_configurable(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    assert coord.init_producer_id("tx", 900_000).error is NONE
    coord.max_timeout_ms = 1_000
    assert coord.init_producer_id("tx", 1_001).error is ErrorCode.INVALID_TRANSACTION_TIMEOUT


def test_expire_aborts_a_transaction_open_longer_than_its_timeout(tmp_path) -> None:
    coord, ports, clock = make(tmp_path)
    _, pid, epoch = coord.init_producer_id("tx", 10_000)
    clock.now += 100  # the timeout counts from the transaction's start, not from init
    coord.add_partitions("tx", pid, epoch, [T0, T1])
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(1)})
    assert coord.expire(clock.now + 10) == []  # not longer than 10 s yet
    assert coord.expire(clock.now + 10.001) == ["tx"]
    assert ports.markers == [("t", 0, pid, 1, False), ("t", 1, pid, 1, False)]
    assert ports.committed == {}
    txn = state(coord)
    assert (txn.state, txn.producer_epoch) == (S.COMPLETE_ABORT, 1)
    # The timed-out instance is fenced, as in Kafka; a new instance takes over.
    assert coord.end_txn("tx", pid, epoch, commit=False) is ErrorCode.PRODUCER_FENCED
    assert coord.add_partitions("tx", pid, epoch, [T0]) == {T0: ErrorCode.PRODUCER_FENCED}
    assert coord.init_producer_id("tx", 10_000) == (NONE, pid, 2)
    assert coord.expire(clock.now + 100) == []


def test_expire_leaves_idle_and_completed_ids_alone(tmp_path) -> None:
    coord, ports, clock = make(tmp_path)
    pid, epoch = begin(coord, timeout_ms=1_000)
    coord.end_txn("tx", pid, epoch, commit=True)
    coord.init_producer_id("idle", 1_000)
    assert coord.expire(clock.now + 3600) == []
    assert len(ports.markers) == 2


# -- bad input -------------------------------------------------------------------------


def test_unknown_transactional_ids_and_wrong_producer_ids_are_unmapped(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    unmapped = ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert coord.add_partitions("nope", 0, 0, [T0]) == {T0: unmapped}
    assert coord.add_offsets("nope", 0, 0, "g") is unmapped
    assert coord.txn_offset_commit("nope", 0, 0, "g", {T0: om(1)}) == {T0: unmapped}
    assert coord.end_txn("nope", 0, 0, commit=True) is unmapped  # EndTxn without init
    pid, epoch = begin(coord)
    assert coord.add_partitions("tx", pid + 1, epoch, [U0]) == {U0: unmapped}
    assert coord.add_offsets("tx", pid + 1, epoch, "g") is unmapped
    assert coord.end_txn("tx", pid + 1, epoch, commit=True) is unmapped
    assert state(coord).partitions == {T0, T1}


def test_malformed_requests(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    bad = ErrorCode.INVALID_REQUEST
    assert coord.init_producer_id("", 60_000).error is bad
    assert coord.init_producer_id("tx", 60_000, 5, -1).error is bad  # half a KIP-360 pair
    assert coord.init_producer_id("tx", 60_000, -1, 5).error is bad
    pid, epoch = begin(coord)
    assert coord.add_partitions("", pid, epoch, [T0]) == {T0: bad}
    assert coord.add_offsets("", pid, epoch, "g") is bad
    assert coord.txn_offset_commit("", pid, epoch, "g", {T0: om(1)}) == {T0: bad}
    assert coord.end_txn("", pid, epoch, commit=True) is bad
    assert coord.add_offsets("tx", pid, epoch, "") is ErrorCode.INVALID_GROUP_ID
    assert coord.txn_offset_commit("tx", pid, epoch, "", {T0: om(1)}) == {
        T0: ErrorCode.INVALID_GROUP_ID
    }
    assert coord.add_partitions("tx", pid, epoch, [U0, ("t", -1), ("", 0)]) == {
        U0: ErrorCode.OPERATION_NOT_ATTEMPTED,
        ("t", -1): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ("", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert coord.add_partitions("tx", pid, epoch, []) == {}
    assert coord.txn_offset_commit("tx", pid, epoch, "g", {}) == {}
    assert state(coord).partitions == {T0, T1}


def test_offsets_need_an_open_transaction_that_added_their_group(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    _, pid, epoch = coord.init_producer_id("tx", 60_000)
    invalid = {("in", 0): ErrorCode.INVALID_TXN_STATE}
    assert coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(1)}) == invalid
    coord.add_partitions("tx", pid, epoch, [T0])
    assert coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(1)}) == invalid
    coord.add_offsets("tx", pid, epoch, "other")
    assert coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(1)}) == invalid
    assert not coord.has_pending_offsets("g")


# -- completion failures and restarts --------------------------------------------------


def test_a_failed_marker_write_keeps_the_decision_and_is_retried(tmp_path) -> None:
    coord, ports, clock = make(tmp_path)
    pid, epoch = begin(coord)
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(9)})
    ports.broken = {T1}
    busy = ErrorCode.CONCURRENT_TRANSACTIONS
    assert coord.end_txn("tx", pid, epoch, commit=True) is busy
    assert state(coord).state is S.PREPARE_COMMIT
    assert ports.markers == [("t", 0, pid, epoch, True)]
    assert ports.committed == {}
    # Everything else waits; a contradicting outcome is refused outright.
    assert coord.end_txn("tx", pid, epoch, commit=True) is busy
    assert coord.end_txn("tx", pid, epoch, commit=False) is ErrorCode.INVALID_TXN_STATE
    assert coord.add_partitions("tx", pid, epoch, [U0]) == {U0: busy}
    assert coord.add_offsets("tx", pid, epoch, "g") is busy
    assert coord.init_producer_id("tx", 60_000) == (busy, -1, -1)
    ports.broken = set()
    assert coord.expire(clock.now) == []  # the failure just happened: back off
    assert state(coord).state is S.PREPARE_COMMIT
    coord.expire(clock.now + 1)
    assert state(coord).state is S.COMPLETE_COMMIT
    # The partition already marked was not marked again.
    assert ports.markers == [("t", 0, pid, epoch, True), ("t", 1, pid, epoch, True)]
    assert ports.committed == {"g": {("in", 0): om(9)}}
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE


def test_the_next_call_completes_a_stuck_transaction_at_once(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0])
    ports.broken = {T0}
    assert coord.end_txn("tx", pid, epoch, commit=False) is ErrorCode.CONCURRENT_TRANSACTIONS
    ports.broken = set()
    assert coord.add_partitions("tx", pid, epoch, [U0]) == {U0: NONE}
    assert ports.markers == [("t", 0, pid, epoch, False)]
    assert state(coord).partitions == {U0}


def test_a_marker_for_a_deleted_partition_is_skipped(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord)
    ports.gone = {T0}
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    assert ports.markers == [("t", 1, pid, epoch, True)]


def test_a_restart_in_prepare_commit_completes_the_commit(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0, T1, U0])
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(11)})
    ports.crash_after = 1
    with pytest.raises(Crash):
        coord.end_txn("tx", pid, epoch, commit=True)
    assert ports.markers == [("t", 0, pid, epoch, True)]
    assert ports.committed == {}

    again, fresh, _ = make(tmp_path)  # the restarted broker
    commit = [(t, p, pid, epoch, True) for t, p in (T0, T1, U0)]
    assert fresh.markers == commit  # markers are rewritten; the log ignores repeats
    assert fresh.committed == {"g": {("in", 0): om(11)}}
    assert state(again).state is S.COMPLETE_COMMIT
    assert again.end_txn("tx", pid, epoch, commit=True) is NONE  # the client's retry


def test_a_restart_in_prepare_abort_completes_the_abort(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, _ = begin(coord)
    ports.crash_after = 0
    with pytest.raises(Crash):
        coord.init_producer_id("tx", 60_000)  # fencing abort, interrupted
    again, fresh, _ = make(tmp_path)
    assert fresh.markers == [("t", 0, pid, 1, False), ("t", 1, pid, 1, False)]
    assert state(again).state is S.COMPLETE_ABORT
    assert again.init_producer_id("tx", 60_000) == (NONE, pid, 2)  # the client's retry


def test_a_restart_that_still_cannot_write_markers_retries_later(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0])
    ports.crash_after = 0
    with pytest.raises(Crash):
        coord.end_txn("tx", pid, epoch, commit=True)
    broken = Ports()
    broken.broken = {T0}
    again, _, clock = make(tmp_path, broken)
    assert state(again).state is S.PREPARE_COMMIT
    broken.broken = set()
    again.expire(clock.now + 1)
    assert broken.markers == [("t", 0, pid, epoch, True)]
    assert state(again).state is S.COMPLETE_COMMIT


def test_a_restart_keeps_open_transactions_and_restarts_their_timeout_clock(tmp_path) -> None:
    coord, _, clock = make(tmp_path)
    pid, epoch = begin(coord, timeout_ms=10_000)
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(2)})
    before = state(coord)
    later = Clock()
    later.now = clock.now + 3600  # long past the timeout, but nobody was watching
    again, ports, _ = make(tmp_path, clock=later)
    assert state(again) == before
    assert again.expire(later.now + 9) == []
    assert again.end_txn("tx", pid, epoch, commit=True) is NONE
    assert ports.committed == {"g": {("in", 0): om(2)}}


def test_a_restart_keeps_epochs_and_producer_ids(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    coord.init_producer_id("tx", 60_000)
    coord.init_producer_id("tx", 60_000)
    again, _, _ = make(tmp_path)
    assert again.init_producer_id("tx", 60_000) == (NONE, 0, 2)
    assert again.init_producer_id("other", 60_000).producer_id > 0


def test_a_timed_out_transaction_found_after_restart_is_aborted_later(tmp_path) -> None:
    coord, _, clock = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0], timeout_ms=5_000)
    again, ports, _ = make(tmp_path, clock=clock)
    assert again.expire(clock.now + 6) == ["tx"]
    assert ports.markers == [("t", 0, pid, epoch + 1, False)]


def test_a_failed_state_write_changes_nothing(tmp_path) -> None:
    storage = FaultyStorage()
    coord, ports, _ = make(tmp_path, storage=storage)
    _, pid, epoch = coord.init_producer_id("tx", 60_000)
    storage.fail("fsync")
    with pytest.raises(OSError, match="Input/output"):
        coord.add_partitions("tx", pid, epoch, [T0])
    assert state(coord).state is S.EMPTY
    coord.add_partitions("tx", pid, epoch, [T0])
    storage.fail("fsync")
    with pytest.raises(OSError, match="Input/output"):
        coord.end_txn("tx", pid, epoch, commit=True)  # the decision is not durable: no markers
    assert ports.markers == []
    assert state(coord).state is S.ONGOING
    assert coord.end_txn("tx", pid, epoch, commit=True) is NONE
    again, _, _ = make(tmp_path)
    assert state(again).state is S.COMPLETE_COMMIT


# -- the state files -------------------------------------------------------------------


def test_the_state_file_is_readable_json(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0])
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 3): om(8)})
    raw = json.loads((tmp_path / "__meta" / "transactions" / "tx.json").read_bytes())
    assert raw == {
        "version": 1,
        "transactional_id": "tx",
        "producer_id": pid,
        "producer_epoch": epoch,
        "last_producer_id": -1,
        "last_producer_epoch": -1,
        "timeout_ms": 60_000,
        "state": "Ongoing",
        "partitions": [["t", 0]],
        "groups": ["g"],
        "pending_offsets": [
            {
                "group": "g",
                "topic": "in",
                "partition": 3,
                "offset": 8,
                "metadata": "m",
                "leader_epoch": -1,
                "timestamp": 1,
            }
        ],
        "start_time_ms": 1_700_000_000_000,
        "last_update_ms": 1_700_000_000_000,
    }


def test_odd_and_long_transactional_ids_get_safe_file_names(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    ids = ["a/b", "..", "ü ✓", "x" * 1000, "@" + "0" * 64]
    for tid in ids:
        assert coord.init_producer_id(tid, 60_000).error is NONE
    names = os.listdir(tmp_path / "__meta" / "transactions")
    assert len(names) == len(ids)
    assert all(len(n) < 255 and "/" not in n for n in names)
    again, _, _ = make(tmp_path)
    assert sorted(t.transactional_id for t in again.describe()) == sorted(ids)


def test_a_corrupt_state_file_is_an_error_naming_it(tmp_path) -> None:
    make(tmp_path)[0].init_producer_id("tx", 60_000)
    path = tmp_path / "__meta" / "transactions" / "tx.json"
    path.write_text('{"version": 1, "transactional_id": "tx"}')
    with pytest.raises(StorageError, match=r"tx\.json is unreadable"):
        make(tmp_path)


def test_leftovers_of_an_interrupted_write_are_removed(tmp_path) -> None:
    make(tmp_path)[0].init_producer_id("tx", 60_000)
    leftover = tmp_path / "__meta" / "transactions" / "tx.json.tmp"
    leftover.write_text("{")
    again, _, _ = make(tmp_path)
    assert not leftover.exists()
    assert state(again).producer_epoch == 0


# -- views and helpers -----------------------------------------------------------------


def test_check_produce(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T0])
    assert coord.check_produce(pid, epoch, "t", 0, transactional=True) is NONE
    assert (
        coord.check_produce(pid, epoch, "t", 1, transactional=True) is ErrorCode.INVALID_TXN_STATE
    )
    assert coord.check_produce(pid, epoch, "t", 0, transactional=False) is (
        ErrorCode.INVALID_TXN_STATE
    )
    assert coord.check_produce(pid, epoch - 1, "t", 0, transactional=True) is (
        ErrorCode.INVALID_PRODUCER_EPOCH
    )
    assert coord.check_produce(999, 0, "t", 0, transactional=True) is (
        ErrorCode.INVALID_PRODUCER_ID_MAPPING
    )
    assert coord.check_produce(999, 0, "t", 0, transactional=False) is NONE
    coord.end_txn("tx", pid, epoch, commit=True)
    assert (
        coord.check_produce(pid, epoch, "t", 0, transactional=True) is ErrorCode.INVALID_TXN_STATE
    )
    assert coord.check_produce(pid, epoch, "t", 0, transactional=False) is NONE


def test_has_pending_offsets_by_partition(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    pid, epoch = begin(coord)
    coord.add_offsets("tx", pid, epoch, "g")
    coord.txn_offset_commit("tx", pid, epoch, "g", {("in", 0): om(1)})
    assert coord.has_pending_offsets("g", [("in", 0), ("in", 1)])
    assert not coord.has_pending_offsets("g", [("in", 1)])
    assert not coord.has_pending_offsets("other")


def test_producer_state_and_describe(tmp_path) -> None:
    coord, _, _ = make(tmp_path)
    pid, epoch = begin(coord, partitions=[T1, T0])
    txn = coord.producer_state(pid)
    assert txn is not None
    assert (txn.transactional_id, txn.producer_epoch, txn.state) == ("tx", epoch, S.ONGOING)
    assert txn.start_time_ms == 1_700_000_000_000
    assert coord.producer_state(pid + 1) is None
    assert coord.describe() == [txn]
    assert coord.describe_transaction("nope") is None


def test_a_closed_coordinator_refuses_calls(tmp_path) -> None:
    coord, _, clock = make(tmp_path)
    _, pid, epoch = coord.init_producer_id("tx", 60_000)
    coord.close()
    with pytest.raises(LogClosedError, match="closed"):
        coord.init_producer_id("tx", 60_000)
    with pytest.raises(LogClosedError):
        coord.add_partitions("tx", pid, epoch, [T0])
    with pytest.raises(LogClosedError):
        coord.end_txn("tx", pid, epoch, commit=True)
    assert coord.expire(clock.now + 3600) == []


def test_many_threads_many_transactions(tmp_path) -> None:
    coord, ports, _ = make(tmp_path)
    errors: list[object] = []

    def work(n: int) -> None:
        tid = f"tx-{n}"
        _, pid, epoch = coord.init_producer_id(tid, 60_000)
        for i in range(5):
            results = [
                *coord.add_partitions(tid, pid, epoch, [("t", n), ("t", 100 + i)]).values(),
                coord.end_txn(tid, pid, epoch, commit=i % 2 == 0),
            ]
            errors.extend(r for r in results if r is not NONE)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ports.markers) == 8 * 5 * 2
    assert len({m[2] for m in ports.markers}) == 8  # one producer id per transactional id


# -- a model of the whole machine ------------------------------------------------------

_TIMEOUT_MS = 10_000
_PARTITIONS = [T0, T1, U0]
_COMPLETED = {True: S.COMPLETE_COMMIT, False: S.COMPLETE_ABORT}


class _Model:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.epoch = 0
        self.state = S.EMPTY
        self.partitions: set[tuple[str, int]] = set()
        self.groups: set[str] = set()
        self.pending: dict[tuple[str, int], OffsetAndMetadata] = {}
        self.started = 0.0
        self.last_epoch = -1  # the epoch a KIP-360 init bumped from (its retry's key)


class TransactionMachine(RuleBasedStateMachine):
    """Random calls, restarts and clock jumps against a plain-Python model of the rules."""

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="hw-txn-")
        self.ports = Ports()
        self.clock = Clock()
        self.coord, _, _ = make(self.dir, self.ports, self.clock)
        self.model: dict[str, _Model] = {}
        self.markers: list[tuple[str, int, int, int, bool]] = []
        self.committed: dict[tuple[str, int], OffsetAndMetadata] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _open(self, m: _Model, partitions=(), group=None) -> None:
        if m.state is not S.ONGOING:
            m.state, m.partitions, m.groups, m.pending = S.ONGOING, set(), set(), {}
            m.started = self.clock.now
        m.partitions |= set(partitions)
        if group:
            m.groups.add(group)

    def _finish(self, m: _Model, commit: bool, epoch: int) -> None:
        self.markers += [(t, p, m.pid, epoch, commit) for t, p in sorted(m.partitions)]
        if commit:
            self.committed.update(m.pending)
        m.state, m.partitions, m.groups, m.pending = _COMPLETED[commit], set(), set(), {}

    def _expected_fence(self, m: _Model, handle) -> ErrorCode | None:
        return None if handle[2] == m.epoch else ErrorCode.PRODUCER_FENCED

    @rule(target=handles, tid=st.sampled_from(["a", "b"]))
    def init(self, tid):
        result = self.coord.init_producer_id(tid, _TIMEOUT_MS)
        m = self.model.get(tid)
        if m is None:
            m = self.model[tid] = _Model(result.producer_id)
        else:
            self._bump(m, last_epoch=-1)
        assert result == (NONE, m.pid, m.epoch)
        return (tid, m.pid, m.epoch)

    def _bump(self, m: _Model, last_epoch: int) -> None:
        if m.state is S.ONGOING:
            m.epoch += 1
            self._finish(m, False, m.epoch)
        m.epoch += 1
        m.state = S.EMPTY
        m.last_epoch = last_epoch

    @rule(target=handles, handle=handles)
    def init_kip_360(self, handle):
        tid, pid, epoch = handle
        m = self.model[tid]
        result = self.coord.init_producer_id(tid, _TIMEOUT_MS, pid, epoch)
        if epoch == m.epoch:
            self._bump(m, last_epoch=epoch)
        elif not (epoch == m.last_epoch and m.state in (S.EMPTY, *_COMPLETED.values())):
            assert result.error is ErrorCode.PRODUCER_FENCED
            return (tid, pid, epoch)
        assert result == (NONE, m.pid, m.epoch)
        return (tid, m.pid, m.epoch)

    @rule(handle=handles, partitions=st.sets(st.sampled_from(_PARTITIONS), min_size=1))
    def add_partitions(self, handle, partitions):
        tid, pid, epoch = handle
        m = self.model[tid]
        codes = self.coord.add_partitions(tid, pid, epoch, sorted(partitions))
        expected = self._expected_fence(m, handle)
        if expected is None:
            self._open(m, partitions)
        assert codes == dict.fromkeys(partitions, expected or NONE)

    @rule(handle=handles)
    def add_offsets(self, handle):
        tid, pid, epoch = handle
        m = self.model[tid]
        expected = self._expected_fence(m, handle)
        if expected is None:
            self._open(m, group="g")
        assert self.coord.add_offsets(tid, pid, epoch, "g") is (expected or NONE)

    @rule(handle=handles, partition=st.integers(0, 2), offset=st.integers(0, 100))
    def txn_offset_commit(self, handle, partition, offset):
        tid, pid, epoch = handle
        m = self.model[tid]
        tp = ("in", partition)
        expected = self._expected_fence(m, handle)
        if expected is None and (m.state is not S.ONGOING or "g" not in m.groups):
            expected = ErrorCode.INVALID_TXN_STATE
        if expected is None:
            m.pending[tp] = om(offset)
        assert self.coord.txn_offset_commit(tid, pid, epoch, "g", {tp: om(offset)}) == {
            tp: expected or NONE
        }

    @rule(handle=handles, commit=st.booleans())
    def end_txn(self, handle, commit):
        tid, pid, epoch = handle
        m = self.model[tid]
        expected = self._expected_fence(m, handle)
        if expected is None:
            if m.state is S.ONGOING:
                self._finish(m, commit, m.epoch)
            elif m.state not in (S.EMPTY, _COMPLETED[commit]):
                expected = ErrorCode.INVALID_TXN_STATE
        assert self.coord.end_txn(tid, pid, epoch, commit) is (expected or NONE)

    @rule(seconds=st.sampled_from([0.0, 4.0, 11.0]))
    def time_passes(self, seconds):
        self.clock.now += seconds
        expired = []
        for tid, m in sorted(self.model.items()):
            if m.state is S.ONGOING and self.clock.now - m.started > _TIMEOUT_MS / 1000:
                m.epoch += 1
                m.last_epoch = -1
                self._finish(m, False, m.epoch)
                expired.append(tid)
        assert sorted(self.coord.expire()) == expired

    @rule()
    def restart(self):
        self.coord.close()
        self.coord, _, _ = make(self.dir, self.ports, self.clock)
        for m in self.model.values():
            m.started = self.clock.now

    @invariant()
    def matches_the_model(self):
        assert sorted(self.ports.markers) == sorted(self.markers)
        assert self.ports.committed.get("g", {}) == self.committed
        for tid, m in self.model.items():
            txn = self.coord.describe_transaction(tid)
            assert txn is not None
            assert (txn.producer_id, txn.producer_epoch, txn.state) == (m.pid, m.epoch, m.state)
            assert txn.partitions == m.partitions
            assert dict(txn.pending_offsets.get("g", {})) == m.pending


TransactionMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
test_transaction_machine = TransactionMachine.TestCase
