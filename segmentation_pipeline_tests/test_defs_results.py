"""campaign_results materialized by Dagster on a real instance: a campaign exported, the synthetic source playing
its response, the result measured, and viability, the audiences and the report using it."""

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segmentation_pipeline.core import synthetic
from segmentation_pipeline.core.campaign_results import REVENUE
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.schemas import AUDIENCES, CAMPAIGN_RESULTS, VIABILITY
from segmentation_pipeline.core.sources import EVENTS, MERGES
from segmentation_pipeline.core.warehouse import Warehouse, days_between
from segmentation_pipeline.defs.assets.activation import audience_exports, audiences
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.assets.insights import actionability, explanations
from segmentation_pipeline.defs.assets.profiles import clv_backtest, profiles
from segmentation_pipeline.defs.assets.reporting import report
from segmentation_pipeline.defs.assets.results import campaign_results
from segmentation_pipeline.defs.assets.segmentation import clusters, robustness, segment_migration, viability
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)

EXPORT = date(2025, 10, 31)
WINDOW = 14
MEASURED = EXPORT + timedelta(days=WINDOW)
CUSTOMERS = 2000
#: The true effect the source plays: treated customers visit, and so buy, twice as often after the export.
TRUE_UPLIFT = 1.0
SNAPSHOT = [merge_map, campaign_results, clv_backtest, profiles, clusters, segment_migration, robustness, viability]
CONFIG = dg.RunConfig(
    {
        "robustness": {"config": {"n_bootstrap": 5}},
        "campaign_results": {"config": {"window_days": WINDOW}},
        # Half of each campaign kept back: a control group large enough to measure against.
        "audiences": {"config": {"control_share": 0.5}},
        # Enough measured customers for the test's small segments to count.
        "viability": {"config": {"min_control_customers": 20}},
    }
)


def resources(data_dir: Path) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(n_customers=CUSTOMERS, campaign_uplift=TRUE_UPLIFT),
        "llm": LLMResource(),
        "webhook": WebhookResource(),
    }


def materialize(instance: dg.DagsterInstance, data_dir: Path, assets, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets, instance=instance, resources=resources(data_dir), partition_key=day.isoformat(), run_config=CONFIG
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as test_instance:
        yield test_instance


def test_an_exported_campaign_is_measured_and_its_uplift_prices_the_next_campaign(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    store = Warehouse(data_dir)
    source = synthetic.SyntheticSettings(n_customers=CUSTOMERS, campaign_uplift=TRUE_UPLIFT)
    history = days_between(date(2025, 8, 1), EXPORT)
    ingest(store, EVENTS, history, source, ())
    ingest(store, MERGES, history, source, ())

    exported = materialize(
        instance, data_dir, [*SNAPSHOT, actionability, explanations, audiences, audience_exports], EXPORT
    )
    assert metadata(exported, "campaign_results")["nothing_measured_because"] == (
        f"no complete export on {EXPORT - timedelta(days=WINDOW)}"
    )
    assert (store.read_partition(VIABILITY, EXPORT)["uplift_source"].to_pylist()) == ["prior"] * (
        store.read_partition(VIABILITY, EXPORT).num_rows
    )
    groups = store.read_partition(AUDIENCES, EXPORT)["group"].to_pylist()
    assert groups.count("control") > 50 and groups.count("treatment") > 50

    # The days after the export, ingested as a nightly run would: the source plays the campaign's response.
    window = days_between(EXPORT + timedelta(days=1), MEASURED)
    ingested = dg.materialize(
        [raw_events, id_history], instance=instance, resources=resources(data_dir), tags=range_tags(window[0], window[-1])
    )
    assert ingested.success

    measured = materialize(
        instance, data_dir, [*SNAPSHOT, actionability, explanations, audiences, audience_exports, report], MEASURED
    )
    facts = metadata(measured, "campaign_results")
    assert facts["export_day"] == EXPORT.isoformat() and facts["days_with_events"] == WINDOW
    results = store.read_partition(CAMPAIGN_RESULTS, MEASURED).to_pylist()
    revenue = [row for row in results if row["metric"] == REVENUE]
    exported_keys = set(store.read_partition(AUDIENCES, EXPORT)["campaign_key"].to_pylist())
    assert {row["campaign_key"] for row in results} == exported_keys and len(results) == 3 * len(exported_keys)
    # The true effect doubles orders and revenue per treated customer: every campaign's interval holds +100%
    # (where there is one: a small campaign's control group may have bought nothing).
    assert all(row["export_day"] == EXPORT and row["window_last_day"] == MEASURED for row in results)
    intervals = [row for row in revenue if row["relative_ci_low"] is not None]
    assert intervals
    for row in intervals:
        assert row["relative_ci_low"] <= TRUE_UPLIFT <= row["relative_ci_high"], row["summary"]

    # Viability of the measured day prices each measured segment at its campaign's revenue uplift.
    decisions = {row["segment_id"]: row for row in store.read_partition(VIABILITY, MEASURED).to_pylist()}
    # (its campaign with the most customers among those with a relative uplift and 20 control customers).
    largest = {}
    for row in revenue:
        if row["relative_uplift"] is None or row["control_customers"] < 20:
            continue
        customers = row["treatment_customers"] + row["control_customers"]
        if customers > largest.get(row["segment_id"], (0, None))[0]:
            largest[row["segment_id"]] = (customers, row)
    priced = set(largest) & set(decisions)
    assert priced
    for segment_id, decision in decisions.items():
        if segment_id not in priced:
            assert decision["uplift_source"] == "prior" and decision["uplift_used"] == 0.10
            continue
        row = largest[segment_id][1]
        assert decision["uplift_source"] == "measured" and decision["uplift_used"] == row["relative_uplift"]
        assert (decision["uplift_ci_low"], decision["uplift_ci_high"]) == (row["relative_ci_low"], row["relative_ci_high"])
        assert f"measured on {row['campaign_key']} exported {EXPORT}" in decision["uplift_basis"]
    assert metadata(measured, "viability")["segments_at_measured_uplift"] == len(priced)

    # The report says which uplift priced each segment and lists the campaigns measured.
    folder = store.report_dir(MEASURED)
    record = json.loads((folder / "report.json").read_text())
    assert {item["campaign_key"] for item in record["campaign_results"]} == exported_keys
    summary = (folder / "report.md").read_text()
    assert "## Campaign uplift" in summary and "| Revenue uplift (95% CI) |" in summary
    assert all(key in summary for key in exported_keys)
    assert "Campaign uplift" in (folder / "report.html").read_text()

    # In the catalog, and a re-run of the day writes the same file again.
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM campaign_results").fetchone()[0] == len(results)
    path = store.partition_path(CAMPAIGN_RESULTS, MEASURED)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    again = dg.materialize(
        [campaign_results],
        instance=instance,
        resources=resources(data_dir),
        partition_key=MEASURED.isoformat(),
        run_config=dg.RunConfig({"campaign_results": {"config": {"window_days": WINDOW}}}),
    )
    assert again.success
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
