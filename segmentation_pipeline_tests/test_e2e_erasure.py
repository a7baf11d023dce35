"""Erasure end to end: a month of file-source history through the whole graph, customers erased with the
`erasure` job on a real instance and with `python -m segmentation_pipeline.erase`, then every file of the
data folder searched for them; a later delivery naming them; and erasures killed with kill -9 part-way.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import synthetic
from segmentation_pipeline.core.erasure import erase
from segmentation_pipeline.core.ingestion import FileSourceSettings
from segmentation_pipeline.core.schemas import (
    DEFAULT_JUNK_IDS,
    ID_HISTORY,
    QUARANTINE_EVENTS,
    QUARANTINE_ID_HISTORY,
    RAW_EVENTS,
)
from segmentation_pipeline.core.suppression import ensure_salt, salted_sha256
from segmentation_pipeline.core.warehouse import REJECTS_ROWS_KEY, REJECTS_SHA256_KEY, Warehouse, days_between
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.assets.profiles import profiles
from segmentation_pipeline.defs.assets.segmentation import clusters
from segmentation_pipeline.defs.erasure import erasure_job
from segmentation_pipeline.defs.jobs import SNAPSHOT_ASSETS
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)
from segmentation_pipeline_tests.runs import REPOSITORY, environment, instance_home

SOURCE = synthetic.SyntheticSettings(n_customers=2000)
FIRST, LAST = date(2025, 1, 1), date(2025, 1, 30)
#: The day of the snapshot built, and the day the customer without merges has a rejected row on.
SNAPSHOT, REJECTED_DAY = LAST, LAST - timedelta(days=1)
LATER = LAST + timedelta(days=1)
STAGE_CONFIG = {"robustness": {"config": {"n_bootstrap": 5}}}
NO_MERGES = pa.table(
    {"old_id": pa.array([], pa.string()), "new_id": pa.array([], pa.string()), "merged_at": pa.array([], pa.string())}
)


def resources(data_dir: Path) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(kind="files"),
        "llm": LLMResource(),
        "webhook": WebhookResource(),
    }


def land(incoming: Path, table: str, day: date, name: str, rows: pa.Table) -> Path:
    path = incoming / table / f"date={day.isoformat()}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pa_csv.write_csv(rows, path)
    return path


def append(path: Path, lines: str) -> None:
    with path.open("a") as handle:
        handle.write(lines)


class Customers:
    """The customers the tests erase, picked from the synthetic history: one with merged IDs, one without
    but with rejected rows and a rejected merge record of their own, and an ID nobody has."""

    def __init__(self, merged: str, aliases: set[str], plain: str) -> None:
        self.merged, self.plain = merged, plain
        self.alias = sorted(aliases)[0]
        self.aliases = aliases
        self.requested = [merged, plain, "NOBODY-1"]
        self.all_ids = {merged, plain, "NOBODY-1"} | aliases


def linked_ids(merge_files: list[Path]) -> dict[str, set[str]]:
    """ID -> every ID linked with it by merge records (junk IDs link nobody), computed from the files."""
    parent: dict[str, str] = {}

    def root(value: str) -> str:
        while parent.setdefault(value, value) != value:
            value = parent[value]
        return value

    for path in merge_files:
        records = pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types={"old_id": pa.string(), "new_id": pa.string()})
        )
        for old, new in zip(records["old_id"].to_pylist(), records["new_id"].to_pylist()):
            if old.lower() not in DEFAULT_JUNK_IDS and new.lower() not in DEFAULT_JUNK_IDS:
                parent[root(old)] = root(new)
    members: dict[str, set[str]] = {}
    for value in parent:
        members.setdefault(root(value), set()).add(value)
    return {value: members[root(value)] for value in parent}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Customers]:
    """The built history, in a data folder the tests copy."""
    data_dir = tmp_path_factory.mktemp("history") / "data"
    return data_dir, build_history(data_dir)


def build_history(data_dir: Path) -> Customers:
    """A month of events and merges delivered as CSV files into the incoming folder, ingested, and the
    whole snapshot of its last day."""
    incoming = data_dir / "incoming"
    days = days_between(FIRST, LAST)
    event_files = {
        day: land(incoming, "events", day, "shop.csv", synthetic.events_for_day(SOURCE, day)) for day in days
    }
    merge_files = {}
    for day in days:
        records = synthetic.merges_for_day(SOURCE, day)
        if records.num_rows:
            merge_files[day] = land(incoming, "id_history", day, "crm.csv", records)
    # A guest ID merged into an account, both with events; and a customer with events on a day with merges.
    with duckdb.connect() as con:
        seen = set(
            con.execute(
                "SELECT customer_id FROM read_csv(?, all_varchar = true) GROUP BY 1 HAVING count(*) > 3",
                [[str(path) for path in event_files.values()]],
            ).fetchnumpy()["customer_id"]
        )
    links = linked_ids(list(merge_files.values()))
    frequent = sorted(value for value in seen if value not in links)
    alias, account, plain = frequent[0], frequent[1], frequent[2]
    plain_day = REJECTED_DAY
    plain = next(
        value for value in pa_csv.read_csv(event_files[plain_day])["customer_id"].to_pylist() if value in frequent[2:]
    )
    customers = Customers(account, {alias}, plain)
    # A guest ID merged into an account on the tenth day, both with events; the account is asked for.
    merge_day = FIRST + timedelta(days=9)
    merge_file = merge_files.get(merge_day) or land(incoming, "id_history", merge_day, "crm.csv", NO_MERGES)
    append(merge_file, f'"{alias}","{account}",{merge_day} 00:02:00Z\n')
    # Their own rejected rows: a purchase below zero and a merge of the customer with themselves.
    append(event_files[plain_day], f'"x-bad-1","{plain}","purchase",{plain_day} 10:00:00Z,,-5,,,,\n')
    merge_file = merge_files.get(plain_day) or land(incoming, "id_history", plain_day, "crm.csv", NO_MERGES)
    append(merge_file, f'"{plain}","{plain}",{plain_day} 09:00:00Z\n')

    with dg.DagsterInstance.ephemeral() as instance:
        ingested = dg.materialize(
            [raw_events, id_history], instance=instance, resources=resources(data_dir), tags=range_tags(FIRST, LAST)
        )
        assert ingested.success
        built = dg.materialize(
            SNAPSHOT_ASSETS,
            instance=instance,
            resources=resources(data_dir),
            partition_key=SNAPSHOT.isoformat(),
            run_config=dg.RunConfig(STAGE_CONFIG),
        )
        assert built.success
    ensure_salt(Warehouse(data_dir))  # one salt for every copy, so their erasures write the same bytes
    return customers


def read_as(data_dir: Path, path: Path) -> str:
    """Where a reader finds a file: an export's version folder by its day's name (reports are links too)."""
    return re.sub(r"^(exports|reports)/\.versions/(date=[0-9-]+)\.[0-9a-f]{32}/", r"\1/\2/", str(path.relative_to(data_dir)))


def every_file(data_dir: Path) -> dict[str, bytes]:
    return {
        read_as(data_dir, path): path.read_bytes()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def strings_of(path: Path) -> set[str]:
    """Every string value of a Parquet file (columns, nested lists and maps too) and of its key-value metadata."""
    parquet = pq.ParquetFile(path)
    values = {value.decode("utf-8", "replace") for value in (parquet.schema_arrow.metadata or {}).values()}
    for column in parquet.read().columns:
        values |= set(_strings(column.combine_chunks()))
    return values


def _strings(array: pa.Array) -> list[str]:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [value for value in array.to_pylist() if value is not None]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _strings(array.flatten())
    if pa.types.is_map(kind):
        return _strings(array.keys) + _strings(array.items)
    if pa.types.is_struct(kind):
        return [value for index in range(kind.num_fields) for value in _strings(array.field(index))]
    return []


def files_naming(data_dir: Path, ids: set[str]) -> dict[str, set[str]]:
    """File -> the IDs of `ids` in it: Parquet files read as tables, every other file searched as bytes."""
    found = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            named = ids & strings_of(path)
        else:
            content = path.read_bytes()
            named = {value for value in ids if value.encode() in content}
        if named:
            found[str(path.relative_to(data_dir))] = named
    return found


def parquet_tables(data_dir: Path) -> dict[str, pa.Table]:
    """Every Parquet file by where a reader finds it: an export's version folder by its day's name."""
    return {read_as(data_dir, path): pq.ParquetFile(path).read() for path in sorted(data_dir.rglob("*.parquet"))}


def unstamped(schema: pa.Schema) -> dict[bytes, bytes]:
    """A file's key-value metadata but the record of its day's quarantine."""
    stamps = (REJECTS_ROWS_KEY.encode(), REJECTS_SHA256_KEY.encode())
    return {key: value for key, value in (schema.metadata or {}).items() if key not in stamps}


def without(table: pa.Table, ids: set[str]) -> pa.Table:
    value_set = pa.array(sorted(ids), pa.string())
    keep = None
    for name in table.column_names:
        if pa.types.is_string(table.schema.field(name).type):
            trimmed = pc.utf8_trim(table[name], " ")
            hit = pc.fill_null(
                pc.or_(pc.is_in(table[name], value_set=value_set), pc.is_in(trimmed, value_set=value_set)), False
            )
            keep = pc.invert(hit) if keep is None else pc.and_(keep, pc.invert(hit))
    return table if keep is None else table.filter(keep)


def test_erased_customers_are_in_no_file_of_the_data_folder_and_ingestion_drops_them_later(
    tmp_path: Path, history: tuple[Path, Customers]
) -> None:
    source, customers = history
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir, symlinks=True)
    erased = customers.all_ids
    before = files_naming(data_dir, erased)
    kinds = {name.split("/date=")[0] for name in before}
    assert {
        "incoming/events",
        "incoming/id_history",
        "ingested/events",
        "ingested/id_history",
        "warehouse/raw_events",
        "warehouse/quarantine/raw_events",
        "warehouse/id_history",
        "warehouse/quarantine/id_history",
        "warehouse/merge_map",
        "warehouse/profiles",
        "warehouse/clusters",
    } <= kinds, kinds
    assert any(customers.alias in found for name, found in before.items() if name.startswith("warehouse/raw_events"))
    tables_before = parquet_tables(data_dir)

    # The erasure job, on a real instance, given a CSV file with a customer_id column.
    ids_file = tmp_path / "request.csv"
    ids_file.write_text(
        "ticket,customer_id\n" + "".join(f"{n},{value}\n" for n, value in enumerate(customers.requested))
    )
    home = instance_home(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = erasure_job.execute_in_process(
            run_config={"ops": {"erase_customers": {"config": {"ids_file": str(ids_file)}}}},
            instance=instance,
            resources=resources(data_dir),
        )
    assert result.success
    (output,) = [event for event in result.all_events if event.event_type_value == "STEP_OUTPUT"]
    recorded = output.step_output_data.metadata
    assert (recorded["ids_requested"].value, recorded["ids_found"].value) == (3, 2)
    assert recorded["ids_erased"].value == len(customers.all_ids)  # with the IDs merged into one of them

    assert files_naming(data_dir, erased) == {}
    # Every other row is as it was: each Parquet file holds exactly its rows less theirs.
    tables_after = parquet_tables(data_dir)
    removed = {}
    for name, table in tables_before.items():
        if name.startswith("erasure/"):
            continue
        expected = without(table, erased)
        after = tables_after[name]
        # A day's valid rows record their quarantine (its rows and hash): rewritten with it, checked below.
        assert unstamped(after.schema) == unstamped(expected.schema), name
        assert after.schema.equals(expected.schema, check_metadata=False), name
        assert after.to_pylist() == expected.to_pylist(), name
        if table.num_rows != expected.num_rows:
            table_name = name.split("/date=")[0].removeprefix("warehouse/").replace("/", "_")
            removed[table_name] = removed.get(table_name, 0) + table.num_rows - expected.num_rows
    (log_file,) = (data_dir / "erasure" / "log").glob("*.json")
    run = json.loads(log_file.read_text())["runs"][-1]
    assert {table: rows for table, rows in run["rows_removed"].items() if not table.startswith("input_")} == removed
    # One of the erased customers was in a campaign: out of the audiences table and out of the exported lists.
    assert set(removed) == {
        "raw_events", "quarantine_raw_events", "id_history", "quarantine_id_history", "merge_map", "profiles", "clusters",
        "audiences", "exports",
    }  # fmt: skip
    assert run["status"] == "done" and run["files_still_holding_them"] == []
    store = Warehouse(data_dir)
    days = days_between(FIRST, LAST)
    assert store.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days) == {}
    assert store.incomplete_days(ID_HISTORY, QUARANTINE_ID_HISTORY, days) == {}
    # The log names them by salted hashes only.
    salt = (data_dir / "erasure" / "salt").read_text().strip()
    assert {entry["id_sha256"] for entry in run["requested_ids_sha256"]} == {
        salted_sha256(salt, value) for value in customers.requested
    }
    assert run["merged_ids_sha256"] == [salted_sha256(salt, customers.alias)]

    # Again, from the command line: nothing left to do, and not one byte changes.
    files = every_file(data_dir)
    again = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.erase", str(ids_file)],
        cwd=REPOSITORY,
        env=environment(home, data_dir, SEGMENTATION_SOURCE="files"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "Nothing left to erase" in again.stdout
    assert every_file(data_dir) == files

    # A later delivery naming them: their events and merge records are dropped, counted, never quarantined.
    incoming = data_dir / "incoming"
    land(incoming, "events", LATER, "shop.csv", pa.table({"customer_id": [customers.merged, customers.alias, " " + customers.plain, "NEW-1"], "event_type": ["purchase", "page_view", "purchase", "page_view"], "timestamp": [f"{LATER} 10:00:00Z"] * 4, "amount": ["12.5", None, "-1", None]}))  # fmt: skip
    land(incoming, "id_history", LATER, "crm.csv", pa.table({"old_id": ["G-NEW", customers.alias, "G-NEW-2"], "new_id": [customers.merged, "NEW-2", "NEW-1"], "merged_at": [f"{LATER} 08:00:00Z"] * 3}))  # fmt: skip
    with dg.DagsterInstance.ephemeral() as instance:
        later = dg.materialize(
            [raw_events, id_history], instance=instance, resources=resources(data_dir), partition_key=LATER.isoformat()
        )
    assert later.success
    suppressed = {
        event.asset_key.path[-1]: event.materialization.metadata["run_suppressed_rows"].value
        for event in later.get_asset_materialization_events()
    }
    assert suppressed == {"raw_events": 3, "id_history": 2}
    assert store.read_partition(RAW_EVENTS, LATER)["customer_id"].to_pylist() == ["NEW-1"]
    assert store.read_partition(QUARANTINE_EVENTS, LATER).num_rows == 0
    assert store.read_partition(QUARANTINE_ID_HISTORY, LATER).num_rows == 0
    assert files_naming(data_dir / "warehouse", erased) == {}
    # The delivered file and its kept copy hold them as delivered, until the erasure is run again.
    assert set(files_naming(data_dir, erased)) == {
        f"{folder}/{table}/date={LATER}/{name}"
        for folder in ("incoming", "ingested")
        for table, name in (("events", "shop.csv"), ("id_history", "crm.csv"))
    }
    # The alias was erased with the account, and what linked them with it: it is known by its listed hash.
    again = erase(store, customers.requested, FileSourceSettings(incoming))
    assert again.run["ids_erased_before_found_again"] == 1
    assert again.run["rows_removed"] == {"input_events": 6, "input_id_history": 4}
    assert files_naming(data_dir, erased) == {}

    # The stages read what the erasure left as they read any stored day: its customers are built again.
    with dg.DagsterInstance.ephemeral() as instance:
        rebuilt = dg.materialize(
            [merge_map, profiles, clusters],
            instance=instance,
            resources=resources(data_dir),
            partition_key=LAST.isoformat(),
        )
    assert rebuilt.success
    assert files_naming(data_dir, erased) == {}


#: kill -9 at these renames (a file's path ends in the text): before anything is written but the salt;
#: between a day's valid rows and its quarantine; among the snapshot tables; among the input files.
KILL_POINTS = [
    "erasure/suppressed.parquet",
    "warehouse/quarantine/raw_events/date={day}/part-0.parquet",
    "warehouse/profiles/date={snapshot}/part-0.parquet",
    "ingested/events/date={day}/shop.csv",
]
KILLED_ERASURE = """
import os, signal, sys
from pathlib import Path
from segmentation_pipeline.core.erasure import erase
from segmentation_pipeline.core.ingestion import FileSourceSettings
from segmentation_pipeline.core.warehouse import Warehouse

data_dir, point, ids = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
renamed = os.replace

def replace(source, target, *args, **kwargs):
    if str(target).endswith(point):
        os.kill(os.getpid(), signal.SIGKILL)
    return renamed(source, target, *args, **kwargs)

os.replace = replace
erase(Warehouse(data_dir), ids, FileSourceSettings(data_dir / "incoming"))
"""


@pytest.mark.slow
def test_an_erasure_killed_part_way_is_completed_by_running_it_again(
    tmp_path: Path, history: tuple[Path, Customers]
) -> None:
    source, customers = history
    reference = tmp_path / "reference"
    shutil.copytree(source, reference, symlinks=True)
    erase(Warehouse(reference), customers.requested, FileSourceSettings(reference / "incoming"))
    expected = every_file(reference)
    points = [point.format(day=REJECTED_DAY.isoformat(), snapshot=SNAPSHOT.isoformat()) for point in KILL_POINTS]
    killed = {}
    for index, point in enumerate(points):
        data_dir = tmp_path / f"killed-{index}"
        shutil.copytree(source, data_dir, symlinks=True)
        command = [sys.executable, "-c", KILLED_ERASURE, str(data_dir), point, *customers.requested]
        killed[point] = (data_dir, subprocess.Popen(command, cwd=REPOSITORY, stderr=subprocess.PIPE, text=True))
    for point, (data_dir, process) in killed.items():
        _, errors = process.communicate(timeout=120)
        assert process.returncode == -signal.SIGKILL, (point, errors[-2000:])
        logs = list((data_dir / "erasure" / "log").glob("*.json"))
        assert [json.loads(log.read_text())["runs"][-1]["status"] for log in logs] == (
            [] if point.startswith("erasure/") else ["in progress"]
        ), point
        assert files_naming(data_dir, customers.all_ids), point  # killed before it was done

        completed = erase(Warehouse(data_dir), customers.requested, FileSourceSettings(data_dir / "incoming"))
        assert completed.run["status"] == "done"
        stored = every_file(data_dir)
        assert sorted(stored) == sorted(expected), point
        differing = [name for name in expected if stored[name] != expected[name]]
        (log_name,) = [name for name in expected if name.startswith("erasure/log/")]
        assert differing in ([], [log_name]), (point, differing)  # the log's times differ
        runs = [json.loads(stored[log_name])["runs"], json.loads(expected[log_name])["runs"]]
        for entries in runs:
            for entry in entries:
                entry.pop("started_at"), entry.pop("finished_at")
        assert runs[0] == runs[1], point
        assert files_naming(data_dir, customers.all_ids) == {}, point
        assert Warehouse(data_dir).incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days_between(FIRST, LAST)) == {}
