"""Segmented, durable partition logs holding RecordBatch v2 bytes (files, not topics)."""

from __future__ import annotations

from headwater.errors import KeylessRecordError as KeylessRecordError
from headwater.log.compaction import CompactionResult as CompactionResult
from headwater.log.config import FsyncPolicy as FsyncPolicy
from headwater.log.config import LogConfig as LogConfig
from headwater.log.partition_log import LEADER_EPOCH as LEADER_EPOCH
from headwater.log.partition_log import AppendInfo as AppendInfo
from headwater.log.partition_log import PartitionLog as PartitionLog
from headwater.log.storage import Storage as Storage

__all__ = [
    "LEADER_EPOCH",
    "AppendInfo",
    "CompactionResult",
    "FsyncPolicy",
    "KeylessRecordError",
    "LogConfig",
    "PartitionLog",
    "Storage",
]
