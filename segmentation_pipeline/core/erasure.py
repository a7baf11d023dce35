"""Erasure, the right to be forgotten: customers taken out of every file of the data folder, for good.

`erase` is given customer IDs and:

1. takes every ID merged with each of them, both ways (the whole ID history resolved
   with the identity rules, and every stored merge map): a customer is every ID they go by;
2. puts every one of those IDs on the suppression list (core.suppression), which
   ingestion applies from then on;
3. finds the files holding a row of any customer on the list (their distinct IDs hashed
   with the salt, so customers erased before whose rows came back are found too): the
   stored files of every table with customer columns (`TableSpec.customer_columns`:
   raw_events, id_history, their quarantine, merge_map, profiles, clusters, the
   synthetic ground truth), the input files kept from the file source's day folders
   (`ingested/`), and the source's own input files where they lie in the data folder;
4. writes each file again without those rows, under a temporary name renamed into place
   (a day's valid and rejected rows as the pair `Warehouse.rewrite_day` keeps
   consistent), removes cached language-model answers that name them, and looks again:
   what a run writing at the same time brought back is written again;
5. records what it did in `erasure/log/<request>.json`: counts, files, and a salted
   SHA-256 per ID, never an ID.

Running it again for the same customers finds nothing and changes no file. A run
killed part-way leaves every file whole, either as it was or rewritten, and its log
"in progress"; the same erasure run again completes it.

What holds no customer ID is left as it was: figures over many customers (segment sizes
and means, migration counts, the CLV backtest, robustness and viability, the reports and
their charts) keep the erased customers' share until the snapshot of that day is built again.
"""

from __future__ import annotations

import csv
import fcntl
import gzip
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .activation import erase_from_exports, exports_naming
from .errors import DataValidationError, ErasureIncompleteError
from .identity import ResolverSettings, resolve_merges
from .incoming import CONTRACTS
from .ingestion import FileSourceSettings, Source
from .schemas import (
    ID_HISTORY,
    MERGE_MAP,
    QUARANTINE_EVENTS,
    QUARANTINE_ID_HISTORY,
    RAW_EVENTS,
    TABLES,
    UNASSIGNED_EVENTS,
    UNASSIGNED_ID_HISTORY,
    TableSpec,
)
from .sources import Contract, customer_id_sql, files_matching, files_of_day, reader_sql, source_columns
from .suppression import Suppression, add_to_list, ensure_salt, salted_sha256
from .warehouse import (
    DAY_FOLDER,
    PART_FILE,
    Warehouse,
    read_parquet_verified,
    reading_stored,
    remove_stale_temporaries,
    replace_file,
    sql_string,
    temporary_path,
)

LOG_FOLDER = "log"
LOCK_FILE = ".lock"
#: Times the files are looked at again after a rewrite; more means a run keeps writing the customers back.
REWRITE_PASSES = 3
#: Tables whose customer columns hold the raw text of rejected input (a float ID as "103.0", spaces kept).
RAW_TEXT_TABLES = {
    spec.name for spec in (QUARANTINE_EVENTS, QUARANTINE_ID_HISTORY, UNASSIGNED_EVENTS, UNASSIGNED_ID_HISTORY)
}
#: A day's valid rows and their rejected rows, written as a pair (Warehouse.write_day).
DAY_PAIRS = {RAW_EVENTS.name: QUARANTINE_EVENTS, ID_HISTORY.name: QUARANTINE_ID_HISTORY}
#: Text files searched for the IDs as words (reports, cached answers). Only IDs that cannot be a word or
#: a number there are searched for (`_searchable_in_text`): such text is full of words and numbers.
TEXT_SUFFIXES = (".json", ".md", ".html", ".txt", ".csv")
NOT_CHANGED = (
    "Figures over many customers were left as they were (segment sizes, means and totals, migration counts, the "
    "CLV backtest, robustness, viability, actionability and explanations, the reports and their charts): they "
    "name no customer, and keep the erased customers' share until the snapshot of that day is built again."
)

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


# ------------------------------------------------------------------ the request


def read_customer_ids(path: Path) -> list[str]:
    """The customer IDs of a file: one per line, or a CSV file with a `customer_id` column (any case).

    Blank lines and lines starting with # are skipped; spaces around an ID are not part of it."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataValidationError(f"{path}: file of customer IDs not found") from exc
    lines = [line for line in text.splitlines() if line.strip(" \t") and not line.lstrip().startswith("#")]
    if not lines:
        raise DataValidationError(f"{path}: no customer ID in the file; expected one per line, or a customer_id column")
    header = next(csv.reader([lines[0]]))
    names = [name.strip().lower() for name in header]
    if "customer_id" in names:
        column = names.index("customer_id")
        rows = csv.reader(lines[1:])
        ids = [row[column].strip(" \t") for row in rows if len(row) > column]
    elif len(header) > 1:
        raise DataValidationError(
            f"{path}: a CSV file without a customer_id column (found {header}); "
            "expected one ID per line, or a customer_id column"
        )
    else:
        ids = [line.strip(" \t") for line in lines]
    return list(dict.fromkeys(value for value in ids if value))


# ------------------------------------------------------------------ who is erased


def customers_of(
    store: Warehouse, con: duckdb.DuckDBPyConnection, requested: Sequence[str], rules: ResolverSettings
) -> dict[str, set[str]]:
    """Each requested ID -> every ID of the same customer (itself included).

    Linked by the whole ID history resolved as merge_map resolves it (junk IDs and hubs link
    nobody), and by every stored merge map (a customer as resolved on any earlier day), followed
    both ways until nothing new is reached."""
    days = store.partition_days(ID_HISTORY)
    resolved = resolve_merges(store.read_days(ID_HISTORY, days), rules).merge_map if days else MERGE_MAP.empty()
    con.register("resolved_merge_map", resolved.select(["old_id", "canonical_id", "is_junk"]))
    linked = ["SELECT old_id, canonical_id FROM resolved_merge_map WHERE NOT is_junk"]
    if store.has_files(MERGE_MAP):
        linked.append(
            f"SELECT old_id, canonical_id FROM read_parquet({sql_string(store.table_glob(MERGE_MAP))}) WHERE NOT is_junk"
        )
    with reading_stored(MERGE_MAP):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE id_links AS SELECT DISTINCT old_id, canonical_id FROM ("
            + " UNION ALL ".join(linked)
            + ") WHERE old_id <> canonical_id"
        )
    con.unregister("resolved_merge_map")
    links: set[tuple[str, str]] = set()
    known, frontier = set(requested), set(requested)
    while frontier:
        con.register("frontier", pa.table({"id": pa.array(sorted(frontier), pa.string())}))
        found = con.execute(
            "SELECT old_id, canonical_id FROM id_links WHERE old_id IN (SELECT id FROM frontier) "
            "OR canonical_id IN (SELECT id FROM frontier)"
        ).fetchall()
        con.unregister("frontier")
        links |= set(found)
        frontier = {value for pair in found for value in pair} - known
        known |= frontier
    return _components(requested, links)


def _components(requested: Sequence[str], links: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    parent: dict[str, str] = {}

    def root(value: str) -> str:
        parent.setdefault(value, value)
        while parent[value] != value:
            parent[value] = parent[parent[value]]
            value = parent[value]
        return value

    for old_id, canonical_id in links:
        parent[root(old_id)] = root(canonical_id)
    members: dict[str, set[str]] = {}
    for value in list(parent) + list(requested):
        members.setdefault(root(value), set()).add(value)
    return {value: members[root(value)] for value in requested}


# ------------------------------------------------------------------ where they are


@dataclass(frozen=True)
class FileHits:
    """A file holding rows of erased customers: how many rows, and which of the erased IDs."""

    path: Path
    rows: int
    ids: frozenset[str]


@dataclass(frozen=True)
class InputFile:
    """An input file of the file source (kept or incoming), with what its columns are read as."""

    path: Path
    contract: Contract
    mapping: Mapping[str, str]


@dataclass
class Plan:
    """Every file holding rows of the erased customers."""

    #: Table name -> its files with rows of them.
    tables: dict[str, list[FileHits]] = field(default_factory=dict)
    #: Input files in the data folder with rows of them.
    inputs: list[tuple[InputFile, FileHits]] = field(default_factory=list)
    #: Input files outside the data folder with rows of them: the source's, not changed here.
    outside: list[tuple[InputFile, FileHits]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(self.tables.values()) and not self.inputs

    @property
    def found_ids(self) -> set[str]:
        hits = [hit for hits in self.tables.values() for hit in hits] + [hit for _, hit in self.inputs + self.outside]
        return {value for hit in hits for value in hit.ids}

    def rows_removed(self) -> dict[str, int]:
        rows = {name: sum(hit.rows for hit in hits) for name, hits in self.tables.items() if hits}
        for file, hit in self.inputs:
            key = f"input_{file.contract.incoming_folder}"
            rows[key] = rows.get(key, 0) + hit.rows
        return rows

    def files(self, root: Path) -> list[str]:
        paths = [hit.path for hits in self.tables.values() for hit in hits] + [hit.path for _, hit in self.inputs]
        return sorted(_relative(path, root) for path in paths)


def find(
    store: Warehouse, con: duckdb.DuckDBPyConnection, source: Source | None, suppression: Suppression | None
) -> Plan:
    """Every file holding rows of a customer on the suppression list.

    Each file's distinct IDs are hashed with the salt and looked up in the list, so an ID erased
    before is found wherever it is again (delivered since, or left by an erasure stopped part-way),
    even when what linked it to a customer was erased with it."""
    plan = Plan()
    if suppression is None:
        return plan
    con.register("suppressed_hashes", suppression.table())
    try:
        for spec in TABLES.values():
            if spec.customer_columns:
                plan.tables[spec.name] = _table_hits(store, con, spec, suppression)
        # A kept copy is usually a hard link of its incoming file: one file, read once.
        read: dict[tuple[int, int, int, int], FileHits | None] = {}
        for file in input_files(store, source):
            stat = file.path.stat()
            identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if identity not in read:
                read[identity] = _input_hits(con, file, suppression)
            found = read[identity]
            if found is None:
                continue
            hits = FileHits(file.path, found.rows, found.ids)
            if _inside(file.path, store.root):
                plan.inputs.append((file, hits))
            else:
                plan.outside.append((file, hits))
    finally:
        con.unregister("suppressed_hashes")
    return plan


def stored_files(store: Warehouse, spec: TableSpec) -> list[Path]:
    """The stored files of a table (partitions, or the files of an unpartitioned table)."""
    folder = store.table_dir(spec)
    if not folder.is_dir():
        return []
    if spec.partitioned:
        return sorted(
            entry / PART_FILE
            for entry in folder.iterdir()
            if DAY_FOLDER.match(entry.name) and (entry / PART_FILE).is_file()
        )
    return sorted(path for path in folder.glob("*.parquet") if not path.name.startswith("."))


def _value_forms(spec: TableSpec, column: str) -> list[str]:
    """SQL of the forms a stored value may match an ID in: raw text is also taken trimmed, and a whole
    float ("103.0") as the integer ingestion would have read it as."""
    quoted = f'"{column}"'
    if spec.name not in RAW_TEXT_TABLES:
        return [quoted]
    return [quoted, f"trim({quoted})", f"regexp_replace(trim({quoted}), '^(-?[0-9]+)\\.0+$', '\\1')"]


def _table_hits(
    store: Warehouse, con: duckdb.DuckDBPyConnection, spec: TableSpec, suppression: Suppression
) -> list[FileHits]:
    files = stored_files(store, spec)
    if not files:
        return []
    listing = ", ".join(sql_string(str(path)) for path in files)
    forms = [form for column in spec.customer_columns for form in _value_forms(spec, column)]
    columns = ", ".join(f"{form} AS c{index}" for index, form in enumerate(forms))
    relation = f"(SELECT filename, {columns} FROM read_parquet([{listing}], filename = true, union_by_name = true))"
    with reading_stored(spec):
        return _listed_rows(con, relation, len(forms), suppression)


def _listed_rows(con: duckdb.DuckDBPyConnection, relation: str, width: int, suppression: Suppression) -> list[FileHits]:
    """Per file of `relation` (a `filename` column and ID columns c0, c1, ...), its rows naming a listed
    customer. Only distinct IDs are hashed; the rows are counted only where one is listed."""
    columns = [f"c{index}" for index in range(width)]
    values = " UNION ALL ".join(f"SELECT {column} AS id FROM {relation}" for column in columns)
    listed = con.execute(
        f"SELECT id FROM (SELECT DISTINCT id FROM ({values}) WHERE id IS NOT NULL) "
        f"WHERE {suppression.hash_sql('id')} IN (SELECT id_sha256 FROM suppressed_hashes)"
    ).fetchall()
    if not listed:
        return []
    con.register("listed_ids", pa.table({"id": pa.array([value for (value,) in listed], pa.string())}))
    try:
        matched = " OR ".join(f"{column} IN (SELECT id FROM listed_ids)" for column in columns)
        rows = dict(con.execute(f"SELECT filename, count(*) FROM {relation} WHERE {matched} GROUP BY 1").fetchall())
        found = con.execute(
            " UNION ".join(
                f"SELECT filename, {column} FROM {relation} WHERE {column} IN (SELECT id FROM listed_ids)"
                for column in columns
            )
        ).fetchall()
    finally:
        con.unregister("listed_ids")
    ids: dict[str, set[str]] = {}
    for path, value in found:
        ids.setdefault(path, set()).add(value)
    return [FileHits(Path(path), count, frozenset(ids.get(path, ()))) for path, count in sorted(rows.items())]


def input_files(store: Warehouse, source: Source | None) -> list[InputFile]:
    """The file source's input files: kept copies (`ingested/`), the incoming day folders and the
    many-day files of the configured paths. Kept copies are read with the source's column names."""
    files = source if isinstance(source, FileSourceSettings) else None
    found: dict[Path, InputFile] = {}
    for contract in CONTRACTS:
        mapping = dict(files.columns_for(contract)) if files else {}
        roots = [store.kept_input_dir] + ([files.incoming_dir] if files else [])
        for root in roots:
            for day in _day_folders(root / contract.incoming_folder):
                for path in files_of_day(root, contract, day):
                    found.setdefault(path.resolve(), InputFile(path, contract, mapping))
        if files and files.path_for(contract) and files.incoming_dir.is_dir():
            for path in files_matching(files.path_for(contract), files.incoming_dir):
                found.setdefault(path.resolve(), InputFile(path, contract, mapping))
    return [found[path] for path in sorted(found)]


def _day_folders(folder: Path) -> list[date]:
    if not folder.is_dir():
        return []
    days = []
    for entry in folder.iterdir():
        match = DAY_FOLDER.match(entry.name)
        if match and entry.is_dir():
            try:
                days.append(date.fromisoformat(match.group(1)))
            except ValueError:
                continue
    return sorted(days)


def _id_expressions(con: duckdb.DuckDBPyConnection, file: InputFile) -> tuple[str, list[str], list[str]]:
    """(reader SQL, the file's customer columns, SQL of their values as ingestion reads them)."""
    reader = reader_sql(file.path)
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except duckdb.Error as exc:
        raise DataValidationError(
            f"{file.path}: cannot be read to look for the customers ({exc}); it may hold them: "
            "fix or remove the file, then erase again"
        ) from exc
    types = {row[0]: row[1] for row in described}
    renames = source_columns(list(types), file.mapping, file.contract)
    columns = [name for name, target in renames.items() if target in file.contract.spec.customer_columns]
    return reader, columns, [customer_id_sql(types, column) for column in columns]


def _input_hits(con: duckdb.DuckDBPyConnection, file: InputFile, suppression: Suppression) -> FileHits | None:
    if file.path.stat().st_size == 0:
        return None
    reader, _, expressions = _id_expressions(con, file)
    if not expressions:
        return None  # no customer column: ingestion refuses such a file, and it names nobody
    columns = ", ".join(f"{expression} AS c{index}" for index, expression in enumerate(expressions))
    try:
        # Read once; the IDs are looked at twice.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE input_ids AS SELECT {sql_string(str(file.path))} AS filename, "
            f"{columns} FROM {reader}"
        )
        hits = _listed_rows(con, "input_ids", len(expressions), suppression)
    except duckdb.Error as exc:
        raise DataValidationError(
            f"{file.path}: cannot be read to look for the customers ({exc}); it may hold them: "
            "fix or remove the file, then erase again"
        ) from exc
    finally:
        con.execute("DROP TABLE IF EXISTS input_ids")
    return FileHits(file.path, hits[0].rows, hits[0].ids) if hits else None


# ------------------------------------------------------------------ rewriting


def _without(table: pa.Table, spec: TableSpec, erased: pa.Array) -> pa.Table:
    """`table` without the rows whose customer columns hold an erased ID (in any form of `_value_forms`)."""
    hit = None
    for column in spec.customer_columns:
        values = table[column]
        forms = [values]
        if spec.name in RAW_TEXT_TABLES:
            trimmed = pc.utf8_trim(values, " ")
            forms += [trimmed, pc.replace_substring_regex(trimmed, r"^(-?[0-9]+)\.0+$", r"\1")]
        for form in forms:
            matched = pc.is_in(form, value_set=erased)
            hit = matched if hit is None else pc.or_(hit, matched)
    return table.filter(pc.invert(pc.fill_null(hit, False)))


def _rewrite_tables(store: Warehouse, plan: Plan, erased: pa.Array, progress: Progress) -> None:
    by_path = {hit.path: hit for hits in plan.tables.values() for hit in hits}
    for name, rejects_spec in DAY_PAIRS.items():
        spec = TABLES[name]
        valid = {hit.path.parent.name: hit for hit in plan.tables.get(name, [])}
        rejects = {hit.path.parent.name: hit for hit in plan.tables.get(rejects_spec.name, [])}
        for folder in sorted(set(valid) | set(rejects)):
            day = date.fromisoformat(DAY_FOLDER.match(folder).group(1))
            store.rewrite_day(
                spec,
                rejects_spec,
                day,
                _without(read_parquet_verified(valid[folder].path), spec, erased) if folder in valid else None,
                _without(read_parquet_verified(rejects[folder].path), rejects_spec, erased)
                if folder in rejects
                else None,
            )
            for hit in (valid.get(folder), rejects.get(folder)):
                if hit is not None:
                    by_path.pop(hit.path)
                    progress(f"rewrote {_relative(hit.path, store.root)} ({hit.rows:,} rows removed)")
    for name, hits in plan.tables.items():
        spec = TABLES[name]
        for hit in hits:
            if hit.path in by_path:
                store.rewrite_stored(spec, hit.path, _without(read_parquet_verified(hit.path), spec, erased))
                progress(f"rewrote {_relative(hit.path, store.root)} ({hit.rows:,} rows removed)")


def _rewrite_inputs(
    con: duckdb.DuckDBPyConnection, store: Warehouse, plan: Plan, erased: set[str], progress: Progress
) -> None:
    """Write each input file again without the customers' rows. Paths that were one file (a kept copy
    hard-linked to its incoming file) stay one file: the first is written, the others linked to it."""
    same_file: dict[tuple[int, int], list[tuple[InputFile, FileHits]]] = {}
    for file, hit in plan.inputs:
        stat = file.path.stat()
        same_file.setdefault((stat.st_dev, stat.st_ino), []).append((file, hit))
    for (first, hit), *others in same_file.values():
        _rewrite_input(con, first, erased)
        progress(f"rewrote {_relative(first.path, store.root)} ({hit.rows:,} rows removed)")
        for other, other_hit in others:
            _link_over(first.path, other.path)
            progress(f"rewrote {_relative(other.path, store.root)} ({other_hit.rows:,} rows removed)")


def _link_over(source: Path, target: Path) -> None:
    remove_stale_temporaries([target.parent])
    temporary = temporary_path(target)
    try:
        os.link(source, temporary)
        replace_file(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _rewrite_input(con: duckdb.DuckDBPyConnection, file: InputFile, erased: set[str]) -> None:
    reader, columns, expressions = _id_expressions(con, file)
    if file.path.suffix.lower() == ".parquet":
        matched = " OR ".join(
            f"coalesce(({expression}) IN (SELECT id FROM erased_ids), false)" for expression in expressions
        )
        # DuckDB reads a file in its order (insertion order is preserved), row for row with pyarrow's.
        hit = np.array([row[0] for row in con.execute(f"SELECT {matched} FROM {reader}").fetchall()], dtype=bool)
        table = pq.ParquetFile(file.path).read()
        if len(hit) != table.num_rows:
            raise DataValidationError(f"{file.path}: read as {len(hit)} rows and as {table.num_rows}; not rewritten")
        _write_input(file.path, _parquet_bytes(table.filter(pa.array(~hit))))
        return
    _write_input(file.path, _csv_without(con, file.path, columns, erased))


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _csv_without(con: duckdb.DuckDBPyConnection, path: Path, columns: Sequence[str], erased: set[str]) -> bytes:
    """The CSV file's bytes without the records naming an erased ID; every other byte as it was.

    Records are told apart by the dialect DuckDB finds when ingestion reads the file, so a quoted
    value spanning lines is one record."""
    raw = path.read_bytes()
    compressed = path.name.lower().endswith(".gz")
    text = (gzip.decompress(raw) if compressed else raw).decode("utf-8", "surrogateescape")
    # sniff_csv says "(empty)" for no quote or escape character.
    delimiter, quote, escape = (
        "" if value == "(empty)" else value
        for value in con.execute(f"SELECT Delimiter, Quote, Escape FROM sniff_csv({sql_string(str(path))})").fetchall()[
            0
        ]
    )
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    options: dict[str, object] = {"delimiter": delimiter or ","}
    if quote:
        options |= {"quotechar": quote, "doublequote": not escape or escape == quote}
        if escape and escape != quote:
            options["escapechar"] = escape
    else:
        options["quoting"] = csv.QUOTE_NONE
    records = csv.reader(iter(lines), **options)
    header = [name.lstrip("\ufeff") for name in next(records, [])]
    positions = [index for index, name in enumerate(header) if name in columns]
    if len(positions) != len(columns):
        raise DataValidationError(
            f"{path}: the customer columns {list(columns)} are not all in its header {header}; not rewritten"
        )
    kept, start = lines[: records.line_num], records.line_num
    for record in records:
        span = lines[start : records.line_num]
        start = records.line_num
        if not any(index < len(record) and _as_ingested(record[index]) in erased for index in positions):
            kept.extend(span)
    content = "".join(kept).encode("utf-8", "surrogateescape")
    return gzip.compress(content, mtime=0) if compressed else content


def _as_ingested(value: str) -> str | None:
    """A CSV value as the customer ID ingestion reads it (spaces around it trimmed; empty is none)."""
    if value.startswith(" ") or value.endswith(" ") or value == "":
        return value.strip(" ") or None
    return value


def _write_input(path: Path, content: bytes) -> None:
    """Replace a file with `content` in one rename; what a killed write of its folder left is removed first."""
    remove_stale_temporaries([path.parent])
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        replace_file(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ------------------------------------------------------------------ text: reports and cached answers


def _words_pattern(ids: Iterable[str]) -> re.Pattern[str] | None:
    """The IDs (those with a letter in them) as whole words; None if there are none."""
    searchable = sorted((value for value in ids if _searchable_in_text(value)), key=len, reverse=True)
    if not searchable:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(value) for value in searchable) + r")(?![\w-])")


def _text_files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
                yield path


def _naming(path: Path, pattern: re.Pattern[str]) -> bool:
    return pattern.search(path.read_bytes().decode("utf-8", "replace")) is not None


# ------------------------------------------------------------------ the log


@dataclass
class ErasureResult:
    """What an erasure did: its entry in the log (for an erasure with nothing left to do, the entry of
    the one that did it)."""

    log_path: Path
    run: dict
    nothing_to_do: bool
    resumed: bool


def log_path(store: Warehouse, request_sha256: str) -> Path:
    return store.erasure_dir / LOG_FOLDER / f"{request_sha256[:24]}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_input(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


@contextmanager
def _one_erasure_at_a_time(store: Warehouse) -> Iterator[None]:
    """Erasures take turns (the suppression list and the files they write are shared); the lock is
    the kernel's, released when a process holding it is killed."""
    store.erasure_dir.mkdir(parents=True, exist_ok=True)
    with open(store.erasure_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------ the erasure


def erase(
    store: Warehouse,
    requested_ids: Sequence[str],
    source: Source | None,
    rules: ResolverSettings | None = None,
    progress: Progress = _silent,
) -> ErasureResult:
    """Erase the customers of `requested_ids` and every ID merged with them (see the module docstring).

    Raises ErasureIncompleteError when rows or mentions of them are still found once it has ended."""
    rules = rules or ResolverSettings()
    requested = list(dict.fromkeys(value.strip(" ") for value in requested_ids if value.strip(" ")))
    junk = {value.strip().lower() for value in rules.junk_ids}
    customers = [value for value in requested if value.lower() not in junk]
    with _one_erasure_at_a_time(store), store.connect() as con:
        salt = ensure_salt(store)
        members = customers_of(store, con, customers, rules) if customers else {}
        asked = {value for ids in members.values() for value in ids}
        # On the list first: ingestion starting from now on drops them, whatever this run gets to.
        added = add_to_list(store, salt, asked)
        suppression = Suppression.load(store)
        plan = find(store, con, source, suppression)
        erased = _erased_ids(con, asked | plan.found_ids)
        pattern = _words_pattern(erased)
        answers = [path for path in _text_files(store.llm_cache_dir) if pattern and _naming(path, pattern)]
        request = salted_sha256(salt, "\n".join(sorted(customers)))
        path = log_path(store, request)
        log = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"request_sha256": request, "runs": []}
        resumed = bool(log["runs"]) and log["runs"][-1]["status"] == "in progress"
        exported = exports_naming(store.root, set(erased))
        if plan.empty and not answers and not exported and not resumed and log["runs"]:
            return ErasureResult(path, log["runs"][-1], nothing_to_do=True, resumed=False)
        progress(
            f"{len(customers):,} customers asked for: {len(erased):,} IDs with those merged with them, "
            f"in {len(plan.files(store.root)):,} files"
        )
        if resumed:
            run = log["runs"][-1]
            _add_rows(run, plan, store.root, only_new=True)
        else:
            run = _new_run(salt, requested, customers, members, plan, store.root, added)
            log["runs"].append(run)
        _write_json(path, log)

        for attempt in range(REWRITE_PASSES):
            _rewrite_tables(store, plan, pa.array(erased, pa.string()), progress)
            _rewrite_inputs(con, store, plan, set(erased), progress)
            plan = find(store, con, source, suppression)
            if plan.empty or attempt == REWRITE_PASSES - 1:
                break
            erased = _erased_ids(con, set(erased) | plan.found_ids)
            progress(
                f"{len(plan.files(store.root))} files hold them again (a run wrote them meanwhile): rewriting them"
            )
            _add_rows(run, plan, store.root, only_new=False)
        # The audience exports are published folders: each naming them is published again without them.
        for folder, rows in erase_from_exports(store.root, set(erased)):
            progress(f"published {_relative(folder, store.root)} again without them ({rows} rows)")
            run["export_folders_rewritten"] = [*run.get("export_folders_rewritten", []), _relative(folder, store.root)]
            run["rows_removed"]["exports"] = run["rows_removed"].get("exports", 0) + rows
        for answer in answers:
            answer.unlink(missing_ok=True)
            progress(f"removed the cached language-model answer {_relative(answer, store.root)}")
        reports = [report for report in _text_files(store.reports_dir) if pattern and _naming(report, pattern)]
        left = (
            plan.files(store.root)
            + [_relative(report, store.root) for report in reports]
            + [_relative(folder, store.root) for folder in exports_naming(store.root, set(erased))]
        )
        run["llm_cache_answers_removed"] = run.get("llm_cache_answers_removed", 0) + len(answers)
        run["input_files_outside_data_folder"] = sorted(str(file.path) for file, _ in plan.outside)
        run["files_still_holding_them"] = left
        run["status"] = "incomplete" if left else "done"
        run["finished_at"] = _now()
        _write_json(path, log)
    if left:
        raise ErasureIncompleteError(
            f"rows or mentions of the erased customers are still in {len(left)} files after {REWRITE_PASSES} "
            f"rewrites: {left[:10]}. A run writing them back at the same time keeps doing so: erase again once no "
            "run is writing. A report naming them: materialize that day's report again, then erase again"
        )
    return ErasureResult(path, run, nothing_to_do=False, resumed=resumed)


def _erased_ids(con: duckdb.DuckDBPyConnection, ids: set[str]) -> list[str]:
    """The IDs being erased, sorted, also as the temporary table `erased_ids` (input files are rewritten by it)."""
    erased = sorted(ids)
    con.register("erased_arrow", pa.table({"id": pa.array(erased, pa.string())}))
    con.execute("CREATE OR REPLACE TEMP TABLE erased_ids AS SELECT id FROM erased_arrow")
    con.unregister("erased_arrow")
    return erased


def _new_run(
    salt: str,
    requested: Sequence[str],
    customers: Sequence[str],
    members: Mapping[str, set[str]],
    plan: Plan,
    root: Path,
    added: int,
) -> dict:
    found = plan.found_ids
    asked = {value for ids in members.values() for value in ids}
    erased = asked | found
    files = plan.files(root)
    return {
        "status": "in progress",
        "started_at": _now(),
        "finished_at": None,
        "ids_requested": len(requested),
        "ids_not_customers": len(requested) - len(customers),
        "ids_found": sum(1 for value in customers if members[value] & found),
        "ids_erased": len(erased),
        # On the suppression list from an earlier erasure, and found in a file again.
        "ids_erased_before_found_again": len(found - asked),
        "ids_not_searched_in_text": sum(1 for value in erased if not _searchable_in_text(value)),
        "requested_ids_sha256": sorted(
            (
                {
                    "id_sha256": salted_sha256(salt, value),
                    "found": bool(members[value] & found),
                    "ids_merged_with_it": len(members[value]) - 1,
                }
                for value in customers
            ),
            key=lambda entry: entry["id_sha256"],
        ),
        "merged_ids_sha256": sorted(salted_sha256(salt, value) for value in asked - set(customers)),
        "suppression_list_added": added,
        "rows_removed": plan.rows_removed(),
        "files_rewritten": len(files),
        "files": files,
        "llm_cache_answers_removed": 0,
        "input_files_outside_data_folder": sorted(str(file.path) for file, _ in plan.outside),
        "not_changed": NOT_CHANGED,
    }


def _add_rows(run: dict, plan: Plan, root: Path, only_new: bool) -> None:
    """Count in `run` the rows of `plan`: all of them (rows written back meanwhile), or those of files it
    has not counted yet (a run resumed: what the killed run planned and did not get to is counted)."""
    for name, (table, rows) in _rows_by_file(plan, root).items():
        if only_new and name in run["files"]:
            continue
        run["rows_removed"][table] = run["rows_removed"].get(table, 0) + rows
        if name not in run["files"]:
            run["files"] = sorted([*run["files"], name])
    run["files_rewritten"] = len(run["files"])


def _rows_by_file(plan: Plan, root: Path) -> dict[str, tuple[str, int]]:
    """File (relative to the data folder) -> (its table, or input_<folder>; rows of the customers in it)."""
    rows = {_relative(hit.path, root): (name, hit.rows) for name, hits in plan.tables.items() for hit in hits}
    for file, hit in plan.inputs:
        rows[_relative(hit.path, root)] = (f"input_{file.contract.incoming_folder}", hit.rows)
    return rows


def _searchable_in_text(value: str) -> bool:
    """An ID a report or an answer could hold only as that ID: at least 6 characters, with a letter and a
    digit or an @ . _ - (C0001234, jane@example.com); not a word, a number or a segment ID (S01)."""
    letter = re.search(r"[^\W\d_]", value) is not None
    other = re.search(r"[\d@._-]", value) is not None
    return len(value) >= 6 and letter and other


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _relative(path: Path, root: Path) -> str:
    """A path as the log names it: relative to the data folder when inside it."""
    for candidate in (Path(path), Path(path).resolve()):
        if candidate.is_relative_to(root):
            return str(candidate.relative_to(root))
    return str(path)


__all__ = [
    "ErasureResult",
    "FileHits",
    "InputFile",
    "NOT_CHANGED",
    "Plan",
    "customers_of",
    "describe",
    "erase",
    "find",
    "input_files",
    "log_path",
    "read_customer_ids",
    "stored_files",
]


def describe(result: ErasureResult) -> list[str]:
    """What an erasure did, in lines for an operator."""
    run = result.run
    when = run.get("finished_at") or run["started_at"]
    if result.nothing_to_do:
        return [
            f"Nothing left to erase: these customers were erased at {when} (UTC); no file was changed.",
            f"Log: {result.log_path}",
        ]
    customers = run["ids_requested"] - run["ids_not_customers"]
    lines = [
        f"Erased {run['ids_found']:,} of the {customers:,} customers asked for "
        f"({run['ids_erased']:,} IDs with the IDs merged with them)"
        + (", completing an erasure that had been stopped" if result.resumed else "")
        + ".",
    ]
    if run.get("ids_erased_before_found_again"):
        lines.append(
            f"IDs erased before and found in a file again (delivered since), removed too: "
            f"{run['ids_erased_before_found_again']:,}."
        )
    if run["ids_found"] < customers:
        lines.append(
            f"Not found in any file: {customers - run['ids_found']:,} of them (put on the suppression list all the same)."
        )
    if run["ids_not_customers"]:
        lines.append(f"Not customer IDs (junk IDs such as 'unknown'), left alone: {run['ids_not_customers']:,}.")
    removed = "; ".join(f"{table} {rows:,}" for table, rows in sorted(run["rows_removed"].items()))
    lines.append(f"Rows removed: {removed or 'none'}.")
    lines.append(f"Files rewritten: {run['files_rewritten']:,} (listed in the log).")
    if run.get("llm_cache_answers_removed"):
        lines.append(f"Cached language-model answers naming them, removed: {run['llm_cache_answers_removed']:,}.")
    lines.append(
        f"Suppression list: {run['suppression_list_added']:,} IDs added as salted SHA-256 hashes; "
        "ingestion drops their rows from now on."
    )
    if run["ids_not_searched_in_text"]:
        lines.append(
            f"{run['ids_not_searched_in_text']:,} IDs too short, or of digits or letters alone, were not searched "
            "for in reports and cached answers (such text is full of words and numbers); reports name no customer."
        )
    outside = run.get("input_files_outside_data_folder") or []
    if outside:
        lines.append(
            f"Input files outside the data folder still hold them, not changed ({len(outside):,}): remove the "
            "customers there too, or the next ingestion of those days keeps a copy of them again (their rows "
            "are dropped): " + ", ".join(outside[:10]) + (" ..." if len(outside) > 10 else "")
        )
    lines.append(NOT_CHANGED)
    lines.append(f"Log: {result.log_path}")
    return lines
