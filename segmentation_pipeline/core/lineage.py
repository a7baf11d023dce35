"""What a snapshot's segment IDs follow: the previous stored snapshot, and every ID used before.

A day's segments keep the IDs of the previous snapshot's segments they match, and a new segment
takes the next number never used on an earlier day. So `clusters` of a day reads two things of
other days: the segments of the latest stored day before it, and the segment IDs of every earlier
day. `PreviousSnapshot` is that reading, with a fingerprint; reading it again when the day's files
are written tells whether an earlier day was written in the meantime (a run of another day side by
side), which would make this day's IDs follow a snapshot that is no longer the one stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schemas import SEGMENTS, conform
from .warehouse import Warehouse


@dataclass(frozen=True)
class PreviousSnapshot:
    """The stored snapshot a day's segment IDs follow (none for the first day) and the IDs used before."""

    as_of: date
    day: date | None
    #: SHA-256 of the previous day's segments file, as read.
    segments_sha256: str | None
    segments: pa.Table | None
    segment_ids_before: tuple[str, ...]

    def fingerprint(self) -> str:
        """One value for what the day's IDs depend on: the previous day, its segments' bytes, the IDs used before."""
        parts = [self.day.isoformat() if self.day else "none", self.segments_sha256 or "", *self.segment_ids_before]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def describe(self) -> str:
        if self.day is None:
            return "no earlier snapshot"
        return (
            f"the snapshot of {self.day} (segments sha256 {self.segments_sha256[:12]}, "
            f"{len(self.segment_ids_before)} segment IDs used before)"
        )


def previous_snapshot(warehouse: Warehouse, as_of: date) -> PreviousSnapshot:
    """Read, as stored now, the previous snapshot of `as_of` and the segment IDs of every earlier day."""
    earlier = warehouse.partition_days(SEGMENTS, end=as_of - timedelta(days=1))
    if not earlier:
        return PreviousSnapshot(as_of, None, None, None, ())
    # The segments are parsed from the very bytes that are hashed: what was used is what is fingerprinted.
    content = warehouse.partition_path(SEGMENTS, earlier[-1]).read_bytes()
    segments = conform(pq.read_table(pa.BufferReader(content)), SEGMENTS)
    used = pc.unique(warehouse.read_days(SEGMENTS, earlier)["segment_id"]).to_pylist()
    return PreviousSnapshot(as_of, earlier[-1], hashlib.sha256(content).hexdigest(), segments, tuple(sorted(used)))


def unchanged_since(warehouse: Warehouse, used: PreviousSnapshot) -> tuple[bool, str]:
    """Whether what `used` read is still what is stored; and a sentence saying so, or what changed."""
    now = previous_snapshot(warehouse, used.as_of)
    if now.fingerprint() == used.fingerprint():
        return True, f"segment IDs of {used.as_of} follow {used.describe()}, still the stored one"
    if now.day != used.day:
        change = f"the snapshot of {now.day} was written while it ran" if now.day else "it was removed"
    elif now.segments_sha256 != used.segments_sha256:
        change = f"the snapshot of {now.day} was written again while it ran"
    else:
        change = "segment IDs of an earlier day changed while it ran"
    return False, (
        f"segment IDs of {used.as_of} follow {used.describe()}, but {change} (now {now.describe()}): "
        f"materialize clusters of {used.as_of} again, and the days after it"
    )
