"""raw_events, id_history and merge_map materialized by Dagster on a temporary data folder."""

import json
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import synthetic
from segmentation_pipeline.core.schemas import ID_HISTORY, MERGE_MAP, QUARANTINE_EVENTS, RAW_EVENTS, SYNTHETIC_TRUTH
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.defs.assets import ingestion as ingestion_assets
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import EventSourceResource, IdentityRulesResource, WarehouseResource

DAYS = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def resources(data_dir: Path, **source: object) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(
            **({"kind": "synthetic", "n_customers": 8000, "bad_row_rate": 0.03} | source)
        ),
    }


def ingest_range(instance: dg.DagsterInstance, data_dir: Path, first: date, last: date, **source: object):
    return dg.materialize(
        [raw_events, id_history],
        instance=instance,
        resources=resources(data_dir, **source),
        tags=range_tags(first, last),
    )


def checks_by_name(result: dg.ExecuteInProcessResult, day: date) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's check results of one day (each day of a run has its own, under its partition)."""
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.partition == day.isoformat()}


def test_a_range_is_one_run_writing_one_file_per_day_and_a_rerun_changes_nothing(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = ingest_range(instance, data_dir, DAYS[0], DAYS[-1])
    assert first.success
    warehouse = Warehouse(data_dir)
    assert warehouse.partition_days(RAW_EVENTS) == DAYS
    assert warehouse.partition_days(ID_HISTORY) == DAYS
    partitions = {m.partition for m in first.asset_materializations_for_node("raw_events")}
    assert partitions == {day.isoformat() for day in DAYS}
    assert len(instance.get_runs()) == 1

    before = {day: warehouse.read_partition(RAW_EVENTS, day) for day in DAYS}
    total = sum(table.num_rows for table in before.values())
    assert total > 1000
    assert all(check.passed for day in DAYS for check in checks_by_name(first, day).values())

    second = ingest_range(instance, data_dir, DAYS[0], DAYS[-1])
    assert second.success
    for day in DAYS:
        assert warehouse.read_partition(RAW_EVENTS, day).equals(before[day])
        assert sorted(p.name for p in warehouse.partition_path(RAW_EVENTS, day).parent.iterdir()) == ["part-0.parquet"]

    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:
        rows, distinct_ids = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchone()
        per_day = dict(con.execute("SELECT date, count(*) FROM raw_events GROUP BY 1").fetchall())
        quarantined = con.execute(f"SELECT count(*) FROM {QUARANTINE_EVENTS.name}").fetchone()[0]
        reasons = {row[0] for row in con.execute(f"SELECT DISTINCT reason FROM {QUARANTINE_EVENTS.name}").fetchall()}
    assert rows == distinct_ids == total
    # The four kinds of row the synthetic source breaks on purpose, each caught.
    assert reasons == {"missing_customer_id", "unknown_event_type", "negative_amount", "timestamp_outside_partition"}
    assert per_day == {day: before[day].num_rows for day in DAYS}
    materializations = {m.partition: m.metadata for m in second.asset_materializations_for_node("raw_events")}
    assert {p: m["dagster/row_count"].value for p, m in materializations.items()} == {
        day.isoformat(): before[day].num_rows for day in DAYS
    }
    metadata = materializations[DAYS[0].isoformat()]
    assert metadata["run_rows"].value == total
    assert metadata["run_quarantined_rows"].value == quarantined > 0
    assert sum(m["quarantined_rows"].value for m in materializations.values()) == quarantined


def test_merge_map_resolves_everything_seen_so_far_with_its_checks_passing(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    assert ingest_range(instance, data_dir, DAYS[0], DAYS[-1], merge_probability=0.5).success
    result = dg.materialize(
        [merge_map], instance=instance, resources=resources(data_dir), partition_key=DAYS[-1].isoformat()
    )
    assert result.success
    checks = checks_by_name(result, DAYS[-1])
    assert set(checks) == {
        "canonical_ids_map_to_themselves",
        "one_canonical_id_per_id",
        "no_unresolved_chains",
        "no_junk_merged",
    }
    assert all(check.passed for check in checks.values())

    warehouse = Warehouse(data_dir)
    records = warehouse.read_days(ID_HISTORY, DAYS)
    resolved = warehouse.read_partition(MERGE_MAP, DAYS[-1])
    seen = set(records.column("old_id").to_pylist()) | set(records.column("new_id").to_pylist())
    assert records.num_rows > 0
    assert set(resolved.column("old_id").to_pylist()) == seen
    merged = resolved.filter(pc.not_equal(resolved["old_id"], resolved["canonical_id"]))
    assert merged.num_rows > 0  # merge_probability=0.5 makes plenty of merges in three days
    metadata = result.asset_materializations_for_node("merge_map")[0].metadata
    assert metadata["dagster/row_count"].value == len(seen)
    assert metadata["id_history_days_present"].value == 3


def test_files_source_quarantines_bad_rows_and_warns(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "events" / "date=2025-01-02"
    folder.mkdir(parents=True)
    (folder / "shop.csv").write_text(
        "user,action,at,price\n"
        "u1,purchase,2025-01-02T09:00:00+01:00,10\n"
        "u2,page_view,2025-01-02T10:00:00Z,\n"
        "u3,teleport,2025-01-02T10:00:00Z,\n"
    )
    mapping = {"user": "customer_id", "action": "event_type", "at": "timestamp", "price": "amount"}
    result = ingest_range(instance, data_dir, DAYS[1], DAYS[1], kind="files", event_columns=mapping)
    assert result.success
    warehouse = Warehouse(data_dir)
    assert warehouse.read_partition(RAW_EVENTS, DAYS[1]).column("customer_id").to_pylist() == ["u1", "u2"]
    quarantined = warehouse.read_partition(QUARANTINE_EVENTS, DAYS[1])
    assert quarantined.column("reason").to_pylist() == ["unknown_event_type"]
    assert quarantined.column("source_row").to_pylist() == [3]
    rate = checks_by_name(result, DAYS[1])["quarantine_rate"]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert rate.metadata["rate"].value == 0.3333  # 1 of 3, rounded for the UI (not 0.333333333333333)
    metadata = result.asset_materializations_for_node("id_history")[0].metadata
    assert metadata["days_without_input"].value == ["2025-01-02"]


def test_a_day_without_input_is_flagged_not_passed_over(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "events" / "date=2025-01-01"
    folder.mkdir(parents=True)
    (folder / "shop.csv").write_text("customer_id,event_type,timestamp\nu1,page_view,2025-01-01T09:00:00Z\n")
    # The 2nd's export never came; the 3rd's folder is there but its file is empty.
    (data_dir / "incoming" / "events" / "date=2025-01-03").mkdir()
    (data_dir / "incoming" / "events" / "date=2025-01-03" / "shop.csv").write_text("")
    three_days = ingest_range(instance, data_dir, DAYS[0], DAYS[2], kind="files")
    first, *without = (checks_by_name(three_days, day)["every_day_has_input"] for day in DAYS)
    assert first.passed and first.description == "2025-01-01 has 1 events"
    for day, check in zip(DAYS[1:], without, strict=True):
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.description == f"no input for {day}: no event of that day was stored"
        assert check.metadata["days_without_events"].value == [day.isoformat()]
    nightly = checks_by_name(ingest_range(instance, data_dir, DAYS[1], DAYS[1], kind="files"), DAYS[1])
    assert nightly["every_day_has_input"].description == "no input for 2025-01-02: no event of that day was stored"
    first_day = ingest_range(instance, data_dir, DAYS[0], DAYS[0], kind="files")
    assert checks_by_name(first_day, DAYS[0])["every_day_has_input"].passed
    closed_on_sundays = dg.materialize(
        [raw_events],
        instance=instance,
        resources=resources(data_dir, kind="files"),
        partition_key="2025-01-02",
        run_config=dg.RunConfig({"raw_events": {"config": {"expect_input_every_day": False}}}),
    )
    assert checks_by_name(closed_on_sundays, DAYS[1])["every_day_has_input"].passed


def test_a_file_missing_a_column_fails_the_run_naming_file_and_column(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "events" / "date=2025-01-02"
    folder.mkdir(parents=True)
    (folder / "export.csv").write_text("customer_id,timestamp\nu1,2025-01-02T09:00:00Z\n")
    result = dg.materialize(
        [raw_events],
        instance=instance,
        resources=resources(data_dir, kind="files"),
        partition_key="2025-01-02",
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = (
        failure.step_failure_data.error.cause.message
        if failure.step_failure_data.error.cause
        else failure.step_failure_data.error.message
    )
    assert "export.csv" in message and "'event_type'" in message
    assert not Warehouse(data_dir).partition_path(RAW_EVENTS, DAYS[1]).exists()


def test_the_shipped_samples_run_through_the_graph(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    config = json.loads((SAMPLES / "source.json").read_text())
    config["incoming_dir"] = str(SAMPLES / "incoming")
    data_dir = tmp_path / "data"
    result = ingest_range(instance, data_dir, DAYS[0], DAYS[1], **config)
    assert result.success
    warehouse = Warehouse(data_dir)
    first_day = warehouse.read_partition(RAW_EVENTS, DAYS[0])
    assert first_day.column("event_id").to_pylist() == [f"w-000{i}" for i in range(1, 8)] + ["w-0016"]
    # 09:05 at +01:00 is 08:05 UTC.
    purchase = first_day.filter(pc.equal(first_day["event_type"], "purchase")).to_pylist()[0]
    assert (purchase["timestamp"].hour, purchase["timestamp"].minute, purchase["amount"]) == (8, 5, 24.9)
    second_day = warehouse.read_partition(RAW_EVENTS, DAYS[1])
    assert second_day.column("event_id").to_pylist() == ["w-0010", "w-0011", "w-0012", "w-0013"]
    reasons = {day: warehouse.read_partition(QUARANTINE_EVENTS, day).column("reason").to_pylist() for day in DAYS[:2]}
    assert reasons == {
        DAYS[0]: ["missing_customer_id", "unknown_event_type"],
        DAYS[1]: ["negative_amount", "timestamp_outside_partition"],
    }
    # Filed under 2025-01-02 in local time (+01:00), it happened on 2025-01-01 in UTC.
    assert "w-0016" in first_day.column("event_id").to_pylist()
    resolved = dg.materialize(
        [merge_map], instance=instance, resources=resources(data_dir, **config), partition_key="2025-01-02"
    )
    assert resolved.success
    table = warehouse.read_partition(MERGE_MAP, DAYS[1])
    assert dict(zip(table["old_id"].to_pylist(), table["canonical_id"].to_pylist())) == {
        "cust-001": "cust-001",
        "cust-002": "cust-002",
        "cust-009": "cust-001",
        "cust-077": "cust-077",
        "guest-77": "cust-077",
        "unknown": "unknown",
    }
    assert table.filter(pc.field("is_junk"))["old_id"].to_pylist() == ["unknown"]


def test_a_day_run_warns_about_rows_of_a_neighbouring_day(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    config = json.loads((SAMPLES / "source.json").read_text()) | {"incoming_dir": str(SAMPLES / "incoming")}
    result = ingest_range(instance, tmp_path / "data", DAYS[1], DAYS[1], **config)
    assert result.success
    check = checks_by_name(result, DAYS[1])["no_rows_for_other_days"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rows"].value == 1
    assert "2025-01-01 (1)" in check.description
    # Run together with that day, nothing is left over.
    both = ingest_range(instance, tmp_path / "data", DAYS[0], DAYS[1], **config)
    assert all(checks_by_name(both, day)["no_rows_for_other_days"].passed for day in DAYS[:2])


def test_merge_map_applies_merges_in_effect_by_the_end_of_its_day(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "id_history" / "date=2025-01-02"
    folder.mkdir(parents=True)
    # Filed on 2025-01-02 (local time), the second merge takes effect on 2025-01-03 in UTC.
    (folder / "crm.csv").write_text(
        "old_id,new_id,merged_at\nA,B,2025-01-02T10:00:00Z\nC,D,2025-01-02T20:00:00-06:00\n"
    )
    assert ingest_range(instance, data_dir, DAYS[0], DAYS[2], kind="files").success
    warehouse = Warehouse(data_dir)
    for day in (DAYS[1], DAYS[2]):
        assert dg.materialize(
            [merge_map], instance=instance, resources=resources(data_dir, kind="files"), partition_key=day.isoformat()
        ).success
    as_of = {day: warehouse.read_partition(MERGE_MAP, day) for day in (DAYS[1], DAYS[2])}
    assert dict(zip(as_of[DAYS[1]]["old_id"].to_pylist(), as_of[DAYS[1]]["canonical_id"].to_pylist())) == {
        "A": "B",
        "B": "B",
    }
    assert dict(zip(as_of[DAYS[2]]["old_id"].to_pylist(), as_of[DAYS[2]]["canonical_id"].to_pylist())) == {
        "A": "B",
        "B": "B",
        "C": "D",
        "D": "D",
    }


def test_the_synthetic_ground_truth_is_made_again_only_when_its_settings_change(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    truth = Warehouse(data_dir).table_dir(SYNTHETIC_TRUTH) / "ground_truth.parquet"
    store_truth = ingestion_assets._store_ground_truth

    def slow_to_store(*args) -> None:
        time.sleep(2)  # longer than the day's ingestion: the catalog must wait for it
        store_truth(*args)

    monkeypatch.setattr(ingestion_assets, "_store_ground_truth", slow_to_store)
    assert ingest_range(instance, data_dir, DAYS[0], DAYS[0]).success
    monkeypatch.setattr(ingestion_assets, "_store_ground_truth", store_truth)
    written = truth.stat().st_ino
    people = pq.read_table(truth)
    # Written beside the ingestion, and there before the catalog was refreshed: it has its view.
    with duckdb.connect(str(Warehouse(data_dir).catalog_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM synthetic_truth").fetchone() == (people.num_rows,)
    assert ingest_range(instance, data_dir, DAYS[1], DAYS[1]).success
    assert truth.stat().st_ino == written  # same settings, same generator: not written again
    assert ingest_range(instance, data_dir, DAYS[1], DAYS[1], n_customers=5000).success
    assert truth.stat().st_ino != written
    smaller = pq.read_table(truth)
    assert smaller.num_rows < people.num_rows
    assert smaller.equals(synthetic.ground_truth(synthetic.SyntheticSettings(n_customers=5000, bad_row_rate=0.03)))


def stored_check_records(instance: dg.DagsterInstance) -> dict[str, list[tuple[str | None, str]]]:
    """What the instance keeps of each raw_events check: (partition, status) of every record, oldest first."""
    return {
        key.name: [
            (record.partition, record.status.value)
            for record in reversed(instance.event_log_storage.get_asset_check_execution_history(key, limit=100))
        ]
        for key in raw_events.check_keys
    }


def test_a_ranged_run_records_each_check_once_per_day_under_its_partition(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A single-run backfill used to leave one "Skipped" (planned, never evaluated) row per day and
    check, beside one result of no day; a nightly run one such row beside its result."""
    data_dir = tmp_path / "data"
    assert ingest_range(instance, data_dir, DAYS[0], DAYS[2]).success
    days = [day.isoformat() for day in DAYS]
    records = stored_check_records(instance)
    assert set(records) == {spec.name for spec in raw_events.check_specs} and len(records) == 6
    for name, stored in records.items():
        assert stored == [(day, "SUCCEEDED") for day in days], name
    # Every day's result is about that day's materialization of the run: the UI shows it as current.
    check_keys = list(raw_events.check_keys)
    infos = instance.event_log_storage.get_asset_check_partition_info(check_keys)
    assert len(infos) == 6 * 3
    assert all(info.is_current and info.partition_key in days for info in infos)

    # A nightly run of one partition adds one record per check, under that day.
    nightly = dg.materialize([raw_events], instance=instance, resources=resources(data_dir), partition_key=days[1])
    assert nightly.success
    for name, stored in stored_check_records(instance).items():
        assert stored == [*[(day, "SUCCEEDED") for day in days], (days[1], "SUCCEEDED")], name


def test_a_ranged_run_records_a_failed_day_as_failed_and_the_others_as_passed(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "events" / "date=2025-01-01"
    folder.mkdir(parents=True)
    (folder / "shop.csv").write_text("customer_id,event_type,timestamp\nu1,page_view,2025-01-01T09:00:00Z\n")
    assert ingest_range(instance, data_dir, DAYS[0], DAYS[2], kind="files").success
    stored = stored_check_records(instance)["every_day_has_input"]
    assert stored == [("2025-01-01", "SUCCEEDED"), ("2025-01-02", "FAILED"), ("2025-01-03", "FAILED")]
