"""Damage a stored Parquet file the way a disk or a copy does (bytes changed inside a data page), and a day of
events whose timestamps no compression can shorten, to damage."""

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Past the data page's header (a few dozen bytes of Thrift), inside its values.
INTO_THE_PAGE = 200


def damage_page(path: Path, column: str, size: int = 256, offset: int = INTO_THE_PAGE) -> range:
    """Flip the bits of `size` bytes of the first data page of `column`, `offset` bytes into it, and
    return their positions in the file (the same positions for the same file)."""
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(
        row_group.column(i) for i in range(row_group.num_columns) if row_group.column(i).path_in_schema == column
    )
    first = chunk.data_page_offset + offset
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    assert first + size <= end, f"the {column} pages of {path} hold fewer than {offset + size} bytes"
    data = bytearray(path.read_bytes())
    for position in range(first, first + size):
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return range(first, first + size)


def a_day_of_events(day: date, n: int = 20_000) -> pa.Table:
    """Events at random instants of `day` (incompressible timestamps), some of them purchases."""
    rng = np.random.default_rng(7)
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1_000_000)
    kinds = rng.choice(["page_view", "purchase"], n)
    instants = pa.array(start + rng.integers(0, 86_400_000_000, n), pa.int64())
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "customer_id": [f"C{i % 900}" for i in range(n)],
            "event_type": kinds,
            "timestamp": instants.cast(pa.timestamp("us", tz="UTC")),
            # Purchases have an amount, page views none (NaN is read as null).
            "amount": pa.array(np.where(kinds == "purchase", rng.random(n) * 100, np.nan), from_pandas=True),
        }
    )
