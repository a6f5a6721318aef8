"""Headwater: an event streaming platform in Python.

One durable, partitioned log in Kafka's RecordBatch v2 format, reached in process
(`headwater.open(path)`) or, later, over the Kafka wire protocol.
"""

from __future__ import annotations

from headwater.errors import HeadwaterError as HeadwaterError

__version__ = "0.1.0"

__all__ = ["HeadwaterError", "__version__"]
