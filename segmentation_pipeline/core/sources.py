"""Reading and validating event and ID-merge input, row by row, in DuckDB SQL.

Input comes from files (CSV or Parquet; one folder per day or one file/glob
split by day) or from an Arrow table (the synthetic source). Either way it
goes through the same checks:

* a schema problem (unreadable file, missing required column) fails with a
  DataValidationError that names the file, the column and what was expected;
* a bad row is quarantined with a reason and its source row number, never
  dropped: every input row ends up either valid or quarantined.

Timestamps with any UTC offset are normalised to UTC; timestamps without one
are read in `assume_timezone`; plain dates are midnight of that day.
A transaction log (customer, date, amount) is valid input: every row becomes a
purchase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from .errors import DataValidationError
from .schemas import (
    DEFAULT_JUNK_IDS,
    EVENT_REQUIRED_SOURCE_COLUMNS,
    EVENT_TYPES,
    ID_HISTORY,
    ID_HISTORY_REQUIRED_SOURCE_COLUMNS,
    QUARANTINE_EVENTS,
    QUARANTINE_ID_HISTORY,
    RAW_EVENTS,
    TRANSACTION_REQUIRED_SOURCE_COLUMNS,
    TableSpec,
    conform,
)

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".csv.gz", ".tsv")

# The reasons a row is quarantined, in the order they are tested (the first one wins).
EVENT_REASONS = (
    "missing_customer_id",
    "junk_customer_id",
    "missing_event_type",
    "unknown_event_type",
    "missing_timestamp",
    "unparsable_timestamp",
    "timestamp_outside_partition",
    "unparsable_amount",
    "missing_amount",
    "negative_amount",
    "unparsable_quantity",
    "duplicate_event_id",
)
ID_HISTORY_REASONS = (
    "missing_old_id",
    "missing_new_id",
    "self_merge",
    "missing_merged_at",
    "unparsable_merged_at",
    "merged_at_after_partition",
)


@dataclass(frozen=True)
class Contract:
    """What a source must provide for one warehouse table, and where its rejects go."""

    spec: TableSpec
    quarantine: TableSpec
    required: tuple[str, ...]
    time_column: str
    reasons: tuple[str, ...]
    #: Folder of this table's files under the incoming folder: `<incoming>/<folder>/date=YYYY-MM-DD/`.
    incoming_folder: str


EVENTS = Contract(
    RAW_EVENTS, QUARANTINE_EVENTS, EVENT_REQUIRED_SOURCE_COLUMNS, "timestamp", EVENT_REASONS, "events"
)
MERGES = Contract(
    ID_HISTORY, QUARANTINE_ID_HISTORY, ID_HISTORY_REQUIRED_SOURCE_COLUMNS, "merged_at", ID_HISTORY_REASONS, "id_history"
)


@dataclass
class IngestedDay:
    day: date
    valid: pa.Table
    quarantined: pa.Table

    @property
    def rows_in(self) -> int:
        return self.valid.num_rows + self.quarantined.num_rows


@dataclass
class IngestBatch:
    """Validated rows per day, plus quarantined rows that belong to no day (unreadable time)."""

    days: list[IngestedDay]
    unassigned: pa.Table
    sources: list[str] = field(default_factory=list)

    @property
    def valid_rows(self) -> int:
        return sum(day.valid.num_rows for day in self.days)

    @property
    def quarantined_rows(self) -> int:
        return sum(day.quarantined.num_rows for day in self.days) + self.unassigned.num_rows

    def quarantine_reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        tables = [day.quarantined for day in self.days] + [self.unassigned]
        for table in tables:
            for reason in table.column("reason").to_pylist():
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))


class Ingest:
    """Collects input for a range of days, validates it in DuckDB and splits it by day.

    Add input with `add_file` (a file of one day, or of many days when `day` is
    None) or `add_table`; then `collect()` returns the valid and quarantined
    rows of each day of the range.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        contract: Contract,
        days: Sequence[date],
        *,
        assume_timezone: str = "UTC",
        junk_ids: Iterable[str] = DEFAULT_JUNK_IDS,
    ) -> None:
        if not days:
            raise DataValidationError(f"{contract.spec.name}: no days to ingest")
        self.con = con
        self.contract = contract
        self.days = sorted(days)
        self.junk_ids = sorted({junk.strip().lower() for junk in junk_ids})
        self.sources: list[str] = []
        self._table = f"checked_{contract.spec.name}"
        self._relation_count = 0
        con.execute(f"SET TimeZone = {_sql_string(assume_timezone)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {self._table} AS {self._checked_sql('empty', None)} LIMIT 0")

    # ----------------------------------------------------------------- input

    def add_file(self, path: Path, column_mapping: Mapping[str, str] | None = None, day: date | None = None) -> None:
        """Validate one file: of `day` (rows of other days are quarantined), or of many days."""
        reader = _reader_sql(path)
        try:
            columns = [row[0] for row in self.con.sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        except duckdb.Error as exc:
            raise DataValidationError(f"{path}: cannot be read as {_format_name(path)}: {exc}") from exc
        select = _select_list(path, columns, column_mapping or {}, self.contract)
        self._add(f"SELECT {select} FROM {reader}", str(path), day)

    def add_table(self, table: pa.Table, label: str, day: date | None = None) -> None:
        """Validate an Arrow table whose columns already carry the canonical names."""
        select = _select_list(Path(label), table.column_names, {}, self.contract)
        self._relation_count += 1
        name = f"arrow_input_{self._relation_count}"
        self.con.register(name, table)
        try:
            self._add(f"SELECT {select} FROM {name}", label, day)
        finally:
            self.con.unregister(name)

    def _add(self, relation_sql: str, label: str, day: date | None) -> None:
        self.sources.append(label)
        self._relation_count += 1
        view = f"input_{self._relation_count}"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {relation_sql}")
        try:
            self.con.execute(f"INSERT INTO {self._table} {self._checked_sql(view, day, label)}")
        except duckdb.Error as exc:
            raise DataValidationError(f"{label}: cannot be validated as {self.contract.spec.name}: {exc}") from exc
        finally:
            self.con.execute(f"DROP VIEW IF EXISTS {view}")

    # ---------------------------------------------------------------- output

    def collect(self) -> IngestBatch:
        self._quarantine_duplicates()
        days = []
        for day in self.days:
            valid = self._select_valid(day)
            quarantined = self._select_quarantined("day = ?", [day])
            days.append(IngestedDay(day, valid, quarantined))
        unassigned = self._select_quarantined("day IS NULL", [])
        return IngestBatch(days, unassigned, list(self.sources))

    def _select_valid(self, day: date) -> pa.Table:
        spec = self.contract.spec
        columns = ", ".join(f'"v_{name}" AS "{name}"' for name in spec.columns)
        order = ", ".join(f'"v_{name}"' for name in (self.contract.time_column, spec.columns[0]))
        table = self.con.sql(
            f"SELECT {columns} FROM {self._table} WHERE reason IS NULL AND day = ? ORDER BY {order}",
            params=[day],
        ).to_arrow_table()
        return conform(table, spec)

    def _select_quarantined(self, where: str, params: list[object]) -> pa.Table:
        raw = ", ".join(f'"r_{name}" AS "{name}"' for name in self.contract.spec.columns)
        table = self.con.sql(
            f"SELECT reason, source, source_row, {raw} FROM {self._table} "
            f"WHERE reason IS NOT NULL AND {where} ORDER BY source, source_row",
            params=params,
        ).to_arrow_table()
        return conform(table, self.contract.quarantine)

    def _quarantine_duplicates(self) -> None:
        if self.contract is not EVENTS:
            return
        self.con.execute(
            f"""
            UPDATE {self._table} SET reason = 'duplicate_event_id'
            WHERE reason IS NULL AND (source, source_row) IN (
                SELECT source, source_row FROM (
                    SELECT source, source_row, row_number() OVER (
                        PARTITION BY day, v_event_id ORDER BY source, source_row) AS occurrence
                    FROM {self._table} WHERE reason IS NULL
                ) WHERE occurrence > 1
            )
            """
        )

    # ------------------------------------------------------------------- SQL

    def _checked_sql(self, view: str, day: date | None, label: str = "") -> str:
        if view == "empty":
            view = "(SELECT " + ", ".join(f'NULL::VARCHAR AS "{c}"' for c in self.contract.spec.columns) + ")"
        if day is None:
            start, end = self.days[0], self.days[-1] + timedelta(days=1)
        else:
            start, end = day, day + timedelta(days=1)
        builder = _event_sql if self.contract is EVENTS else _merge_sql
        return builder(view, label, start, end, day, self.junk_ids)


# ------------------------------------------------------------------------ SQL


def _event_sql(view: str, label: str, start: date, end: date, day: date | None, junk_ids: list[str]) -> str:
    """Typed values, raw text and the reason a row is rejected, for every input row."""
    raw = ",\n".join(f'CAST("{c}" AS VARCHAR) AS "r_{c}"' for c in RAW_EVENTS.columns)
    event_types = ", ".join(_sql_string(t) for t in EVENT_TYPES)
    junk = ", ".join(_sql_string(j) for j in junk_ids) or "NULL"
    lower, upper = _utc_bound(start), _utc_bound(end)
    content = "concat_ws('|', customer_id, event_type, epoch_us(ts), session_id, amount_text, quantity_text, product_category, channel, device)"
    in_window = f"(ts IS NULL OR (ts >= {lower} AND ts < {upper}))"
    keep = "TRUE" if day is not None else in_window
    assigned_day = _day_expression(day, "ts")
    return f"""
    WITH numbered AS (
        SELECT row_number() OVER () AS source_row, * FROM {view}
    ), typed AS (
        SELECT
            source_row,
            {raw},
            nullif(trim(CAST("event_id" AS VARCHAR)), '') AS given_event_id,
            nullif(trim(CAST("customer_id" AS VARCHAR)), '') AS customer_id,
            lower(nullif(trim(CAST("event_type" AS VARCHAR)), '')) AS event_type,
            TRY_CAST("timestamp" AS TIMESTAMPTZ) AS ts,
            nullif(trim(CAST("session_id" AS VARCHAR)), '') AS session_id,
            nullif(trim(CAST("amount" AS VARCHAR)), '') AS amount_text,
            TRY_CAST(nullif(trim(CAST("amount" AS VARCHAR)), '') AS DOUBLE) AS amount,
            nullif(trim(CAST("quantity" AS VARCHAR)), '') AS quantity_text,
            TRY_CAST(TRY_CAST(nullif(trim(CAST("quantity" AS VARCHAR)), '') AS DOUBLE) AS INTEGER) AS quantity,
            nullif(trim(CAST("product_category" AS VARCHAR)), '') AS product_category,
            lower(nullif(trim(CAST("channel" AS VARCHAR)), '')) AS channel,
            lower(nullif(trim(CAST("device" AS VARCHAR)), '')) AS device
        FROM numbered
    ), judged AS (
        SELECT *,
            CASE
                WHEN customer_id IS NULL THEN 'missing_customer_id'
                WHEN lower(customer_id) IN ({junk}) THEN 'junk_customer_id'
                WHEN event_type IS NULL THEN 'missing_event_type'
                WHEN event_type NOT IN ({event_types}) THEN 'unknown_event_type'
                WHEN nullif(trim("r_timestamp"), '') IS NULL THEN 'missing_timestamp'
                WHEN ts IS NULL THEN 'unparsable_timestamp'
                WHEN ts < {lower} OR ts >= {upper} THEN 'timestamp_outside_partition'
                WHEN amount_text IS NOT NULL AND amount IS NULL THEN 'unparsable_amount'
                WHEN event_type IN ('purchase', 'refund') AND amount IS NULL THEN 'missing_amount'
                WHEN event_type = 'purchase' AND amount < 0 THEN 'negative_amount'
                WHEN quantity_text IS NOT NULL AND (quantity IS NULL OR quantity < 0) THEN 'unparsable_quantity'
            END AS reason,
            row_number() OVER (PARTITION BY {content} ORDER BY source_row) AS occurrence
        FROM typed
        WHERE {keep}
    )
    SELECT
        {assigned_day} AS day,
        {_sql_string(label)} AS source,
        source_row,
        reason,
        {", ".join(f'"r_{c}"' for c in RAW_EVENTS.columns)},
        coalesce(given_event_id, 'h' || substr(md5({content} || '|' || occurrence), 1, 24)) AS v_event_id,
        customer_id AS v_customer_id,
        event_type AS v_event_type,
        ts AS v_timestamp,
        session_id AS v_session_id,
        CASE WHEN event_type IN ('purchase', 'refund') THEN abs(amount) END AS v_amount,
        quantity AS v_quantity,
        product_category AS v_product_category,
        channel AS v_channel,
        device AS v_device
    FROM judged
    """


def _merge_sql(view: str, label: str, start: date, end: date, day: date | None, junk_ids: list[str]) -> str:
    """Merge records are judged like events; merged_at may be earlier than the day (late arrival)."""
    raw = ",\n".join(f'CAST("{c}" AS VARCHAR) AS "r_{c}"' for c in ID_HISTORY.columns)
    upper = _utc_bound(end)
    lower = _utc_bound(start)
    keep = "TRUE" if day is not None else f"(merged_at IS NULL OR (merged_at >= {lower} AND merged_at < {upper}))"
    assigned_day = _day_expression(day, "merged_at")
    return f"""
    WITH numbered AS (
        SELECT row_number() OVER () AS source_row, * FROM {view}
    ), typed AS (
        SELECT
            source_row,
            {raw},
            nullif(trim(CAST("old_id" AS VARCHAR)), '') AS old_id,
            nullif(trim(CAST("new_id" AS VARCHAR)), '') AS new_id,
            TRY_CAST("merged_at" AS TIMESTAMPTZ) AS merged_at
        FROM numbered
    ), judged AS (
        SELECT *,
            CASE
                WHEN old_id IS NULL THEN 'missing_old_id'
                WHEN new_id IS NULL THEN 'missing_new_id'
                WHEN old_id = new_id THEN 'self_merge'
                WHEN nullif(trim("r_merged_at"), '') IS NULL THEN 'missing_merged_at'
                WHEN merged_at IS NULL THEN 'unparsable_merged_at'
                WHEN merged_at >= {upper} THEN 'merged_at_after_partition'
            END AS reason
        FROM typed
        WHERE {keep}
    )
    SELECT
        {assigned_day} AS day,
        {_sql_string(label)} AS source,
        source_row,
        reason,
        {", ".join(f'"r_{c}"' for c in ID_HISTORY.columns)},
        old_id AS v_old_id,
        new_id AS v_new_id,
        merged_at AS v_merged_at
    FROM judged
    """


# ---------------------------------------------------------------- file layout


def day_folder(incoming: Path, contract: Contract, day: date) -> Path:
    """`<incoming>/<events|id_history>/date=YYYY-MM-DD/`: the folder of one day's files."""
    return incoming / contract.incoming_folder / f"date={day.isoformat()}"


def files_of_day(incoming: Path, contract: Contract, day: date) -> list[Path]:
    folder = day_folder(incoming, contract, day)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_supported(p) and not p.name.startswith("."))


def files_matching(pattern: str, base: Path) -> list[Path]:
    """A file or a glob (relative to `base` unless absolute)."""
    path = Path(pattern).expanduser()
    if not path.is_absolute():
        path = base / path
    if any(ch in str(path) for ch in "*?["):
        anchor = Path(path.anchor)
        return sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file() and _is_supported(p))
    return [path] if path.exists() else []


def fingerprint(paths: Iterable[Path]) -> str:
    """A short stable name for a set of files and their sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _is_supported(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _format_name(path: Path) -> str:
    return "Parquet" if path.suffix.lower() == ".parquet" else "CSV"


def _reader_sql(path: Path) -> str:
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    if path.suffix.lower() == ".parquet":
        return f"read_parquet({_sql_string(str(path))})"
    # Every CSV column is read as text, so a bad value is quarantined with its row
    # instead of failing type detection for the whole file.
    return f"read_csv({_sql_string(str(path))}, all_varchar = true, header = true)"


def _select_list(
    path: Path, columns: Sequence[str], column_mapping: Mapping[str, str], contract: Contract
) -> str:
    """SELECT list that renames the source's columns to the canonical ones.

    A column the source lacks is NULL, except `event_type` of a transaction log,
    which is 'purchase'. A missing required column is a DataValidationError.
    """
    canonical = set(contract.spec.columns)
    unknown_targets = sorted(set(column_mapping.values()) - canonical)
    if unknown_targets:
        raise DataValidationError(
            f"{path}: column mapping targets {unknown_targets} are not columns of "
            f"{contract.spec.name}; expected targets among {contract.spec.columns}"
        )
    renames: dict[str, str] = {}
    for column in columns:
        target = column_mapping.get(column)
        if target is None:
            normalised = column.strip().lower()
            target = normalised if normalised in canonical else None
        if target is not None and target not in renames.values():
            renames[column] = target
    present = set(renames.values())
    required = contract.required
    if contract is EVENTS and "event_type" not in present and "amount" in present:
        required = TRANSACTION_REQUIRED_SOURCE_COLUMNS
    missing = [column for column in required if column not in present]
    if missing:
        mapped_from = {target: source for source, target in column_mapping.items()}
        details = ", ".join(
            f"{column!r}" + (f" (mapped from {mapped_from[column]!r})" if column in mapped_from else "")
            for column in missing
        )
        expected = " + ".join(contract.required)
        if contract is EVENTS:
            expected += " (or " + " + ".join(TRANSACTION_REQUIRED_SOURCE_COLUMNS) + " for a transaction log)"
        raise DataValidationError(
            f"{path}: missing required column {details}; expected {expected}; "
            f"found columns {list(columns)}"
        )
    selected = {target: _quote_identifier(source) for source, target in renames.items()}
    expressions = []
    for column in contract.spec.columns:
        if column in selected:
            expression = selected[column]
        elif column == "event_type":
            expression = "'purchase'"
        else:
            expression = "NULL::VARCHAR"
        expressions.append(f'{expression} AS "{column}"')
    return ", ".join(expressions)


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _day_expression(day: date | None, time_column: str) -> str:
    """The partition a row belongs to: the folder's day, or its own UTC date (NULL if unreadable)."""
    if day is not None:
        return f"DATE '{day.isoformat()}'"
    return f"CAST(timezone('UTC', {time_column}) AS DATE)"


def _utc_bound(day: date) -> str:
    return f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+00'"
