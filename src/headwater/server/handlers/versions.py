"""The API versions the server advertises: exactly what its handlers implement.

Ranges follow the compatibility brief (shared kafka-protocol.md §1.3): every client
finds a common version, and each cap stops just below a change we do not implement
(topic ids in Fetch 13+, batched FindCoordinator 4+, multi-group OffsetFetch 8+).
"""

from __future__ import annotations

__all__ = ["SUPPORTED_VERSIONS"]

SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    0: (3, 10),  # Produce
    1: (4, 12),  # Fetch
    2: (1, 7),  # ListOffsets
    3: (0, 12),  # Metadata
    8: (2, 8),  # OffsetCommit
    9: (1, 7),  # OffsetFetch
    10: (0, 3),  # FindCoordinator
    11: (0, 7),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 5),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    18: (0, 4),  # ApiVersions
    19: (0, 7),  # CreateTopics
    20: (0, 5),  # DeleteTopics
    22: (0, 4),  # InitProducerId
    23: (2, 4),  # OffsetForLeaderEpoch
    24: (0, 3),  # AddPartitionsToTxn
    25: (0, 3),  # AddOffsetsToTxn
    26: (0, 3),  # EndTxn
    28: (0, 3),  # TxnOffsetCommit
    32: (0, 4),  # DescribeConfigs
    42: (0, 2),  # DeleteGroups
    60: (0, 1),  # DescribeCluster
}
