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

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataValidationError
from .schemas import (
    DEFAULT_JUNK_IDS,
    EVENT_REQUIRED_SOURCE_COLUMNS,
    EVENT_TYPES,
    FOLDER_SLACK_DAYS,
    ID_HISTORY,
    ID_HISTORY_REQUIRED_SOURCE_COLUMNS,
    MONETARY_EVENT_TYPES,
    QUARANTINE_EVENTS,
    QUARANTINE_ID_HISTORY,
    RAW_EVENTS,
    TRANSACTION_REQUIRED_SOURCE_COLUMNS,
    TableSpec,
    conform,
)
from .suppression import Suppression
from .warehouse import sql_string, utc_date_sql

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".csv.gz", ".tsv")

#: Bounds that keep every row of a many-day file when counting what lies outside a run.
_ALL_TIME = (date(1, 1, 2), date(9000, 1, 1))

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
    #: Folder of this table's files under the incoming folder: `<incoming>/<folder>/date=YYYY-MM-DD/`.
    incoming_folder: str


EVENTS = Contract(RAW_EVENTS, QUARANTINE_EVENTS, EVENT_REQUIRED_SOURCE_COLUMNS, "timestamp", "events")
MERGES = Contract(ID_HISTORY, QUARANTINE_ID_HISTORY, ID_HISTORY_REQUIRED_SOURCE_COLUMNS, "merged_at", "id_history")


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
    #: Valid rows this run read that belong to days outside the run, per day: they are
    #: stored when those days' partitions are materialized, and must be reported till then.
    outside_run: dict[date, int] = field(default_factory=dict)
    #: Input rows of erased customers (core.suppression), dropped: neither stored nor quarantined.
    suppressed_rows: int = 0

    @property
    def valid_rows(self) -> int:
        return sum(day.valid.num_rows for day in self.days)

    @property
    def quarantined_rows(self) -> int:
        return sum(day.quarantined.num_rows for day in self.days) + self.unassigned.num_rows

    def quarantine_reasons(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for table in [day.quarantined for day in self.days] + [self.unassigned]:
            counts.update(value_counts(table.column("reason")))
        return counts


class Ingest:
    """Collects input for a range of days, validates it in DuckDB and splits it by day.

    Add input with `add_file` (a file of one day, or of many days when `day` is
    None) or `add_days` (Arrow tables, one per day); then `collect()` returns the
    valid and quarantined rows of each day of the range. Every input row carries
    its source, its row number there and, for per-day input, its partition day.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        contract: Contract,
        days: Sequence[date],
        *,
        assume_timezone: str = "UTC",
        junk_ids: Iterable[str] = DEFAULT_JUNK_IDS,
        keep_unassigned: bool = True,
        folder_slack_days: int = FOLDER_SLACK_DAYS,
        run_days: tuple[date, date] | None = None,
        suppression: Suppression | None = None,
    ) -> None:
        if not days:
            raise DataValidationError(f"{contract.spec.name}: no days to ingest")
        self.con = con
        self.contract = contract
        self.days = sorted(days)
        self.junk_ids = sorted({junk.strip().lower() for junk in junk_ids})
        self.sources: list[str] = []
        self.keep_unassigned = keep_unassigned
        self.folder_slack_days = folder_slack_days
        self.run_days = run_days or (self.days[0], self.days[-1])
        self.outside_run: dict[date, int] = {}
        self.suppression = suppression
        self._table = f"checked_{contract.spec.name}"
        self._relation_count = 0
        con.execute(f"SET TimeZone = {sql_string(assume_timezone)}")
        empty = ", ".join(
            ["NULL::VARCHAR AS __source", "NULL::BIGINT AS __source_row", "NULL::DATE AS __partition_day"]
            + [f'NULL::VARCHAR AS "{c}"' for c in contract.spec.columns]
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW empty_input AS SELECT {empty}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {self._table} AS {self._checked_sql('empty_input')} LIMIT 0")

    # ----------------------------------------------------------------- input

    def add_file(self, path: Path, column_mapping: Mapping[str, str] | None = None, day: date | None = None) -> None:
        """Validate one file: of the folder of `day`, or of many days when `day` is None.

        Rows of a day's folder may lie up to a day either side of it in UTC (a shop
        that writes local time): they belong to that UTC day's partition. Rows
        further away are quarantined as outside the partition.
        """
        if path.exists() and path.stat().st_size == 0:
            self.sources.append(str(path))
            return
        reader = _reader_sql(path)
        try:
            columns = [row[0] for row in self.con.sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        except duckdb.Error as exc:
            raise DataValidationError(f"{path}: cannot be read as {_format_name(path)}: {exc}") from exc
        select = _select_list(path, columns, column_mapping or {}, self.contract)
        partition_day = f"DATE '{day.isoformat()}'" if day is not None else "NULL::DATE"
        # row_number() OVER () streams in file order, so it is the row's number in the file.
        self._add(
            f"SELECT {sql_string(str(path))} AS __source, row_number() OVER () AS __source_row, "
            f"{partition_day} AS __partition_day, {select} FROM {reader}",
            str(path),
            many_days=day is None,
        )

    def add_days(self, tables: Mapping[date, pa.Table], label: str) -> None:
        """Validate one Arrow table per day (canonical column names) in a single pass."""
        parts = []
        for day, table in sorted(tables.items()):
            n = table.num_rows
            parts.append(
                table.append_column("__source", pa.repeat(pa.scalar(f"{label}:{day.isoformat()}", pa.string()), n))
                .append_column("__source_row", pa.array(np.arange(1, n + 1, dtype=np.int64)))
                .append_column("__partition_day", pa.repeat(pa.scalar(day, pa.date32()), n))
            )
        if not parts:
            return
        combined = pa.concat_tables(parts, promote_options="default")
        columns = [c for c in combined.column_names if not c.startswith("__")]
        select = _select_list(Path(label), columns, {}, self.contract)
        self._relation_count += 1
        name = f"arrow_input_{self._relation_count}"
        self.con.register(name, combined)
        try:
            self._add(f"SELECT __source, __source_row, __partition_day, {select} FROM {name}", label)
        finally:
            self.con.unregister(name)

    def _add(self, relation_sql: str, label: str, many_days: bool = False) -> None:
        self.sources.append(label)
        self._relation_count += 1
        view = f"input_{self._relation_count}"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {relation_sql}")
        try:
            self.con.execute(f"INSERT INTO {self._table} {self._checked_sql(view)}")
            if many_days and self.keep_unassigned:
                self._count_outside_run(view)
        except duckdb.Error as exc:
            raise DataValidationError(f"{label}: cannot be validated as {self.contract.spec.name}: {exc}") from exc
        finally:
            self.con.execute(f"DROP VIEW IF EXISTS {view}")

    def _count_outside_run(self, view: str) -> None:
        """Valid rows of a many-day file that no day of this run takes (counted once per run)."""
        first, last = self.run_days
        rows = self.con.execute(
            f"SELECT day, count(*) FROM ({self._checked_sql(view, _ALL_TIME)}) "
            "WHERE reason IS NULL AND (day < ? OR day > ?) GROUP BY day",
            [first, last],
        ).fetchall()
        for day, count in rows:
            self.outside_run[day] = self.outside_run.get(day, 0) + count

    # ---------------------------------------------------------------- output

    def collect(self) -> IngestBatch:
        suppressed = self._drop_suppressed()
        self._quarantine_duplicates()
        spec = self.contract.spec
        columns = ", ".join(f'"v_{name}" AS "{name}"' for name in spec.columns)
        order = ", ".join(f'"v_{name}"' for name in (self.contract.time_column, spec.columns[0]))
        valid = self.con.sql(
            f"SELECT day, {columns} FROM {self._table} WHERE reason IS NULL ORDER BY day, {order}"
        ).to_arrow_table()
        raw = ", ".join(f'"r_{name}" AS "{name}"' for name in spec.columns)
        quarantined = self.con.sql(
            f"SELECT day, reason, source, source_row, {raw} FROM {self._table} "
            "WHERE reason IS NOT NULL ORDER BY day NULLS LAST, source, source_row"
        ).to_arrow_table()
        valid_by_day = _split_by_day(valid, spec)
        quarantined_by_day = _split_by_day(quarantined, self.contract.quarantine)
        days = [
            IngestedDay(
                day,
                valid_by_day.get(day, spec.empty()),
                quarantined_by_day.get(day, self.contract.quarantine.empty()),
            )
            for day in self.days
        ]
        unassigned = self.contract.quarantine.empty()
        if self.keep_unassigned:
            unassigned = quarantined_by_day.get(None, unassigned)
        return IngestBatch(days, unassigned, list(self.sources), self._routed_outside_run(), suppressed)

    def _drop_suppressed(self) -> int:
        """Drop every row, valid or not, that names an erased customer in a customer column; returns how many.

        Only the distinct IDs are hashed, and nothing while the list is empty."""
        if self.suppression is None or not self.suppression.hashes:
            return 0
        columns = [f'"v_{name}"' for name in self.contract.spec.customer_columns]
        ids = " UNION ".join(f"SELECT {column} AS id FROM {self._table}" for column in columns)
        self.con.register("suppressed_hashes", self.suppression.table())
        try:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE suppressed_ids AS SELECT id FROM ({ids})
                    WHERE id IS NOT NULL AND {self.suppression.hash_sql("id")} IN (SELECT id_sha256 FROM suppressed_hashes)"""
            )
        finally:
            self.con.unregister("suppressed_hashes")
        named = " OR ".join(f"{column} IN (SELECT id FROM suppressed_ids)" for column in columns)
        ((dropped,),) = self.con.execute(f"DELETE FROM {self._table} WHERE {named}").fetchall()
        return int(dropped)

    def _routed_outside_run(self) -> dict[date, int]:
        """Valid rows of this chunk's folders whose UTC day lies outside the whole run."""
        first, last = self.run_days
        rows = self.con.execute(
            f"SELECT day, count(*) FROM {self._table} WHERE reason IS NULL AND folder_day BETWEEN ? AND ? "
            "AND (day < ? OR day > ?) GROUP BY day",
            [self.days[0], self.days[-1], first, last],
        ).fetchall()
        counts = dict(self.outside_run)
        for day, count in rows:
            counts[day] = counts.get(day, 0) + count
        return dict(sorted(counts.items()))

    def _quarantine_duplicates(self) -> None:
        if self.contract is not EVENTS:
            return
        # Find the repeated IDs with a cheap aggregate first (over the IDs' hashes: integers group
        # faster than strings; a collision only adds candidates), then rank only their rows by ID.
        self.con.execute(
            f"""
            UPDATE {self._table} SET reason = 'duplicate_event_id'
            WHERE reason IS NULL AND (source, source_row) IN (
                SELECT source, source_row FROM (
                    SELECT source, source_row, row_number() OVER (
                        PARTITION BY day, v_event_id ORDER BY source, source_row) AS occurrence
                    FROM {self._table}
                    WHERE reason IS NULL AND (day, hash(v_event_id)) IN (
                        SELECT day, hash(v_event_id) FROM {self._table} WHERE reason IS NULL
                        GROUP BY ALL HAVING count(*) > 1
                    )
                ) WHERE occurrence > 1
            )
            """
        )

    def _checked_sql(self, view: str, bounds: tuple[date, date] | None = None) -> str:
        """Every row of `view`, judged; many-day rows outside `bounds` (default: these days) are left out."""
        types = {row[0]: row[1] for row in self.con.execute(f"DESCRIBE {view}").fetchall()}
        builder = _event_sql if self.contract is EVENTS else _merge_sql
        start, end = bounds or (self.days[0], self.days[-1] + timedelta(days=1))
        return builder(view, _Columns(types), start, end, self.folder_slack_days, self.junk_ids)


def value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    """How often each value occurs in a column, counted by Arrow."""
    return {entry["values"]: entry["counts"] for entry in pc.value_counts(column).to_pylist()}


def _split_by_day(table: pa.Table, spec: TableSpec) -> dict[date | None, pa.Table]:
    """Slices of a table sorted by its `day` column (nulls last), one per day, without copying."""
    if table.num_rows == 0:
        return {}
    day_column = table.column("day")
    days = day_column.cast(pa.int32()).fill_null(np.iinfo(np.int32).max).to_numpy()
    body = table.drop_columns(["day"])
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    slices: dict[date | None, pa.Table] = {}
    for start, end in zip(starts, ends):
        day = day_column[int(start)].as_py()
        slices[day] = conform(body.slice(int(start), int(end - start)), spec)
    return slices


# ------------------------------------------------------------------------ SQL
# Both builders read a view with __source, __source_row, __partition_day and the
# canonical columns. A row of per-day input must fall inside its partition day;
# a row of multi-day input (__partition_day NULL) belongs to its own UTC date and
# is kept only when that date is inside the run's range [start, end).
# Both compare a row's UTC date with the UTC dates [first_day, end_day): an
# instant lies at or after midnight UTC of a day exactly when its UTC date does,
# and one date per row is cheaper than two time-zone conversions of the bounds.


def _bounds_sql(start: date, end: date, slack_days: int) -> str:
    return f"""
            CASE WHEN __partition_day IS NULL THEN DATE '{start.isoformat()}'
                 ELSE __partition_day - {slack_days} END AS first_day,
            CASE WHEN __partition_day IS NULL THEN DATE '{end.isoformat()}'
                 ELSE __partition_day + {slack_days + 1} END AS end_day"""


def _day_sql(own_day: str, route_valid_rows: bool) -> str:
    """The partition of a row: its folder's day, or its own UTC day (NULL when unreadable).

    Valid events always go to their own UTC day, wherever they were filed; merge
    records stay with the day they were delivered on.
    """
    if route_valid_rows:
        return f"CASE WHEN reason IS NULL THEN {own_day} ELSE coalesce(__partition_day, {own_day}) END"
    return f"coalesce(__partition_day, {own_day})"


class _Columns:
    """SQL that reads a source column by its type: text is parsed, typed values are taken as they are.

    Parsing only what is text keeps typed input (Parquet, the synthetic source)
    from a round trip through strings.
    """

    def __init__(self, types: Mapping[str, str]) -> None:
        self.types = types

    def _is_text(self, column: str) -> bool:
        return self.types.get(column, "VARCHAR") == "VARCHAR"

    def text(self, column: str) -> str:
        if self._is_text(column):
            # trim() (spaces only) copies every value; most need nothing, and a prefix or suffix
            # test is a byte comparison: a quarter of the cost, the same values.
            quoted = f'"{column}"'
            return (
                f"CASE WHEN {quoted} LIKE ' %' OR {quoted} LIKE '% ' OR {quoted} = '' "
                f"THEN nullif(trim({quoted}), '') ELSE {quoted} END"
            )
        if self.types[column] in ("DOUBLE", "FLOAT") or self.types[column].startswith("DECIMAL"):
            # pandas stores an ID column with gaps as float: 103.0 is the ID "103".
            # NaN and infinity are no ID: they read as missing.
            return (
                f'CASE WHEN NOT isfinite("{column}") THEN NULL '
                f'WHEN "{column}" = trunc("{column}") AND abs("{column}") < 1e15 '
                f'THEN CAST(CAST("{column}" AS BIGINT) AS VARCHAR) ELSE CAST("{column}" AS VARCHAR) END'
            )
        return f'CAST("{column}" AS VARCHAR)'

    def present(self, column: str) -> str:
        return f"({self.text(column)} IS NOT NULL)" if self._is_text(column) else f'("{column}" IS NOT NULL)'

    def typed(self, column: str, sql_type: str) -> str:
        if self._is_text(column):
            return f"TRY_CAST({self.text(column)} AS {sql_type})"
        return f'TRY_CAST("{column}" AS {sql_type})'

    def instant(self, column: str) -> str:
        """A point in time; a plain date is the start of that calendar day in UTC, whatever the zone."""
        kind = self.types.get(column, "VARCHAR")
        if kind == "DATE":
            return f'timezone(\'UTC\', CAST("{column}" AS TIMESTAMP))'
        if kind != "VARCHAR":
            return self.typed(column, "TIMESTAMPTZ")
        value = self.text(column)
        return (
            f"CASE WHEN regexp_full_match({value}, '\\d{{4}}-\\d{{2}}-\\d{{2}}') "
            f"THEN timezone('UTC', CAST(TRY_CAST({value} AS DATE) AS TIMESTAMP)) "
            f"ELSE TRY_CAST({value} AS TIMESTAMPTZ) END"
        )

    def raw(self, columns: Sequence[str]) -> str:
        """The input as text, computed only for rejected rows (CASE evaluates lazily)."""
        return ",\n        ".join(
            f'CASE WHEN reason IS NOT NULL THEN CAST("{c}" AS VARCHAR) END AS "r_{c}"' for c in columns
        )


def _event_sql(view: str, columns: _Columns, start: date, end: date, slack_days: int, junk_ids: list[str]) -> str:
    """Typed values, and the reason a row is rejected, for every input row."""
    event_types = ", ".join(sql_string(t) for t in EVENT_TYPES)
    monetary = ", ".join(sql_string(t) for t in MONETARY_EVENT_TYPES)
    junk = ", ".join(sql_string(j) for j in junk_ids) or "NULL"
    content = (
        "concat_ws('|', customer_id_value, event_type_value, epoch_us(ts), session_id_value, amount_value, "
        "quantity_value, product_category_value, channel_value, device_value)"
    )
    return f"""
    WITH typed AS (
        SELECT
            *,
            {columns.text("event_id")} AS given_event_id,
            {columns.text("customer_id")} AS customer_id_value,
            lower({columns.text("event_type")}) AS event_type_value,
            {columns.present("timestamp")} AS has_timestamp,
            {columns.instant("timestamp")} AS ts,
            {columns.text("session_id")} AS session_id_value,
            {columns.present("amount")} AS has_amount,
            {columns.typed("amount", "DOUBLE")} AS amount_value,
            {columns.present("quantity")} AS has_quantity,
            {columns.typed("quantity", "DOUBLE")} AS quantity_number,
            {columns.text("product_category")} AS product_category_value,
            lower({columns.text("channel")}) AS channel_value,
            lower({columns.text("device")}) AS device_value,
            {_bounds_sql(start, end, slack_days)}
        FROM {view}
    ), numbers AS (
        SELECT *, TRY_CAST(quantity_number AS INTEGER) AS quantity_value, {utc_date_sql("ts")} AS ts_day FROM typed
    ), judged AS (
        SELECT *,
            CASE
                WHEN customer_id_value IS NULL THEN 'missing_customer_id'
                WHEN lower(customer_id_value) IN ({junk}) THEN 'junk_customer_id'
                WHEN event_type_value IS NULL THEN 'missing_event_type'
                WHEN event_type_value NOT IN ({event_types}) THEN 'unknown_event_type'
                WHEN NOT has_timestamp THEN 'missing_timestamp'
                WHEN ts IS NULL THEN 'unparsable_timestamp'
                WHEN ts_day < first_day OR ts_day >= end_day THEN 'timestamp_outside_partition'
                WHEN has_amount AND (amount_value IS NULL OR NOT isfinite(amount_value)) THEN 'unparsable_amount'
                WHEN event_type_value IN ({monetary}) AND amount_value IS NULL THEN 'missing_amount'
                WHEN event_type_value = 'purchase' AND amount_value < 0 THEN 'negative_amount'
                WHEN has_quantity AND (quantity_value IS NULL OR quantity_value < 0
                    OR quantity_number <> trunc(quantity_number)) THEN 'unparsable_quantity'
            END AS reason
        FROM numbers
        WHERE __partition_day IS NOT NULL OR ts IS NULL OR (ts_day >= first_day AND ts_day < end_day)
    ), identified AS (
        SELECT *, NULL::VARCHAR AS derived_event_id FROM judged WHERE given_event_id IS NOT NULL
        UNION ALL
        -- Identical rows get distinct, stable IDs: a transaction log may hold two
        -- equal purchases (in one file or in two), and a re-run must derive the
        -- same IDs again.
        SELECT *, 'h' || substr(md5(__source || '|' || {content} || '|' || row_number() OVER (
                PARTITION BY __source, {content} ORDER BY __source_row)), 1, 24)
        FROM judged WHERE given_event_id IS NULL
    )
    SELECT
        {_day_sql("ts_day", route_valid_rows=True)} AS day,
        __partition_day AS folder_day,
        __source AS source,
        __source_row AS source_row,
        reason,
        {columns.raw(RAW_EVENTS.columns)},
        coalesce(given_event_id, derived_event_id) AS v_event_id,
        customer_id_value AS v_customer_id,
        event_type_value AS v_event_type,
        ts AS v_timestamp,
        session_id_value AS v_session_id,
        CASE WHEN event_type_value IN ({monetary}) THEN abs(amount_value) END AS v_amount,
        quantity_value AS v_quantity,
        product_category_value AS v_product_category,
        channel_value AS v_channel,
        device_value AS v_device
    FROM identified
    """


def _merge_sql(view: str, columns: _Columns, start: date, end: date, slack_days: int, junk_ids: list[str]) -> str:
    """Merge records are judged like events, but merged_at may lie before the day (a late arrival)."""
    return f"""
    WITH typed AS (
        SELECT
            *,
            {columns.text("old_id")} AS old_id_value,
            {columns.text("new_id")} AS new_id_value,
            {columns.present("merged_at")} AS has_merged_at,
            {columns.instant("merged_at")} AS merged_at_value,
            {_bounds_sql(start, end, slack_days)}
        FROM {view}
    ), dated AS (
        SELECT *, {utc_date_sql("merged_at_value")} AS merged_at_day FROM typed
    ), judged AS (
        SELECT *,
            CASE
                WHEN old_id_value IS NULL THEN 'missing_old_id'
                WHEN new_id_value IS NULL THEN 'missing_new_id'
                WHEN old_id_value = new_id_value THEN 'self_merge'
                WHEN NOT has_merged_at THEN 'missing_merged_at'
                WHEN merged_at_value IS NULL THEN 'unparsable_merged_at'
                WHEN merged_at_day >= end_day THEN 'merged_at_after_partition'
            END AS reason
        FROM dated
        WHERE __partition_day IS NOT NULL OR merged_at_value IS NULL
            OR (merged_at_day >= first_day AND merged_at_day < end_day)
    )
    SELECT
        {_day_sql("merged_at_day", route_valid_rows=False)} AS day,
        __partition_day AS folder_day,
        __source AS source,
        __source_row AS source_row,
        reason,
        {columns.raw(ID_HISTORY.columns)},
        old_id_value AS v_old_id,
        new_id_value AS v_new_id,
        merged_at_value AS v_merged_at
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


def _is_supported(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _format_name(path: Path) -> str:
    return "Parquet" if path.suffix.lower() == ".parquet" else "CSV"


def _reader_sql(path: Path) -> str:
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    # A column is what the file says: DuckDB would otherwise add (or overwrite) a `date` column
    # from a `date=YYYY-MM-DD` folder in the path, the layout of the incoming folder itself.
    if path.suffix.lower() == ".parquet":
        return f"read_parquet({sql_string(str(path))}, hive_partitioning = false, filename = false)"
    # Every CSV column is read as text, so a bad value is quarantined with its row
    # instead of failing type detection for the whole file; a row with too few or
    # too many fields is padded or cut, not a reason to reject the whole file.
    return (
        f"read_csv({sql_string(str(path))}, all_varchar = true, header = true, "
        "null_padding = true, strict_mode = false, hive_partitioning = false, filename = false)"
    )


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
    renames = source_columns(columns, column_mapping, contract)
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


def source_columns(columns: Sequence[str], column_mapping: Mapping[str, str], contract: Contract) -> dict[str, str]:
    """Source column -> the canonical column it is read as: explicit mappings first; then a column
    already named canonically (in any case, spaces around it ignored) fills what is left."""
    canonical = set(contract.spec.columns)
    renames = {column: column_mapping[column] for column in columns if column in column_mapping}
    for column in columns:
        normalised = column.strip().lower()
        if column not in renames and normalised in canonical and normalised not in renames.values():
            renames[column] = normalised
    return renames


def customer_id_sql(types: Mapping[str, str], column: str) -> str:
    """SQL of a source column's value as the customer ID ingestion stores (text trimmed, a whole
    float as an integer), given the source's column types (DESCRIBE)."""
    return _Columns(types).text(column)


def reader_sql(path: Path) -> str:
    """SQL reading an input file as ingestion reads it (every CSV column as text)."""
    return _reader_sql(path)


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
