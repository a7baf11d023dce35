"""profiles, clusters, segment_migration, robustness and viability materialized by Dagster."""

import shutil
import subprocess
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._utils.test.data_versions import get_stale_status_resolver

from segmentation_pipeline.core import synthetic
from segmentation_pipeline.core.errors import SensitivityTestError
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.llm.actionability import Rubric
from segmentation_pipeline.core.llm.campaigns import LIFECYCLE_OFFERS
from segmentation_pipeline.core.robustness import RobustnessSettings, assess_snapshot
from segmentation_pipeline.core.schemas import (
    ACTIONABILITY,
    CLUSTERS,
    EXPLANATIONS,
    MERGE_MAP,
    PROFILES,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENT_MIGRATION,
    SEGMENTS,
    SYNTHETIC_TRUTH,
    VIABILITY,
    RobustnessScore,
    Segment,
    SegmentViability,
)
from segmentation_pipeline.core.sources import EVENTS, MERGES
from segmentation_pipeline.core.warehouse import Warehouse, days_between
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.assets.insights import actionability, explanations
from segmentation_pipeline.defs.assets.profiles import clv_backtest, profiles
from segmentation_pipeline.defs.assets.segmentation import clusters, robustness, segment_migration, viability
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)
from segmentation_pipeline_tests.runs import materialize_command
from segmentation_pipeline_tests.service import REPOSITORY, service_environment

from .damage import damage_page

SNAPSHOT_ASSETS = [merge_map, clv_backtest, profiles, clusters, segment_migration, robustness, viability]
SOURCE = synthetic.SyntheticSettings(n_customers=4000)
DAY_BEFORE, LAST_DAY = date(2025, 12, 30), date(2025, 12, 31)
#: Measured 0.757 with 7 segments on this history (4,000 customers, one year; the demo's 20,000 give
#: 0.73); the floor leaves room for library versions, not for a broken pipeline (3 segments give about 0.1).
ARI_FLOOR = 0.65


def resources(data_dir: Path, **source: object) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(**({"kind": "synthetic", "n_customers": SOURCE.n_customers} | source)),
        "webhook": WebhookResource(),
    }


def snapshot(instance: dg.DagsterInstance, data_dir: Path, day: date, assets=None, run_config=None):
    return dg.materialize(
        assets or SNAPSHOT_ASSETS,
        instance=instance,
        resources=resources(data_dir),
        partition_key=day.isoformat(),
        run_config=run_config,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("dagster_home")
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory, instance: dg.DagsterInstance):
    """A year of synthetic history (ingested by core, as raw_events would) and snapshots of its last two days."""
    data_dir = tmp_path_factory.mktemp("year") / "data"
    warehouse = Warehouse(data_dir)
    days = days_between(date(2025, 1, 1), LAST_DAY)
    ingest(warehouse, EVENTS, days, SOURCE, ())
    ingest(warehouse, MERGES, days, SOURCE, ())
    warehouse.write_file(SYNTHETIC_TRUTH, "ground_truth.parquet", synthetic.ground_truth(SOURCE))
    first = snapshot(instance, data_dir, DAY_BEFORE)
    second = snapshot(instance, data_dir, LAST_DAY)
    assert first.success and second.success
    return data_dir, first, second


def read(data_dir: Path, spec, day: date) -> pa.Table:
    return Warehouse(data_dir).read_partition(spec, day)


def test_every_check_passes_and_the_catalog_answers(year) -> None:
    data_dir, first, second = year
    for result in (first, second):
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 10
        assert all(evaluation.passed for evaluation in evaluations), [
            (e.check_name, e.description) for e in evaluations if not e.passed
        ]
    customers = metadata(second, "profiles")["dagster/row_count"]
    assert customers > 2000
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        day = [LAST_DAY]
        assert con.execute("SELECT count(*) FROM profiles WHERE date = ?", day).fetchone()[0] == customers
        assert con.execute("SELECT count(*) FROM clusters WHERE date = ?", day).fetchone()[0] == customers
        assert con.execute("SELECT sum(size) FROM segments WHERE date = ?", day).fetchone()[0] == customers
        assert con.execute("SELECT count(DISTINCT date) FROM segments").fetchone()[0] == 2
        joined = con.execute(
            "SELECT count(*) FROM robustness r JOIN viability v USING (date, segment_id) "
            "JOIN segments s USING (date, segment_id) WHERE date = ?",
            day,
        ).fetchone()[0]
        assert joined == metadata(second, "clusters")["segments_count"]
        # These snapshots have no report: neither is complete, so no `_latest` view shows them yet.
        assert con.execute("SELECT as_of FROM latest_snapshot").fetchone()[0] is None
        assert con.execute("SELECT count(*) FROM segments_latest").fetchone()[0] == 0


def test_profiles_report_their_window_and_clv_method(year) -> None:
    _, _, second = year
    profile_metadata = metadata(second, "profiles")
    assert profile_metadata["window_days"] == 365
    assert profile_metadata["window_days_present"] == 365
    assert profile_metadata["window_coverage"] == 1.0
    assert profile_metadata["unsupported_features"] == []
    # The model is the one the day's backtest chose, fitted again on the whole window.
    backtest = metadata(second, "clv_backtest")
    model = backtest["chosen_model"]
    assert model in ("bg_nbd", "mbg_nbd", "pareto_nbd"), backtest["reason"]
    assert profile_metadata["clv_model"] == model
    assert profile_metadata["clv_method"] == f"{model}_gamma_gamma"
    assert 0 < profile_metadata[f"{model}_r"] and 0 < profile_metadata["gamma_gamma_q"]


def test_segments_recover_the_generating_archetypes(year) -> None:
    _, _, second = year
    cluster_metadata = metadata(second, "clusters")
    # Seven archetypes generated the customers: seven behaviour clusters, recovered over every customer, best
    # over the established ones that shaped them. The segments split each behaviour by lifecycle group, which
    # the archetypes know nothing of, so they agree less with them by construction.
    assert cluster_metadata["k"] == 7
    assert cluster_metadata["adjusted_rand_index"] >= ARI_FLOOR
    assert cluster_metadata["adjusted_rand_index_shaping_customers"] > cluster_metadata["adjusted_rand_index"]
    assert cluster_metadata["adjusted_rand_index_other_customers"] < cluster_metadata["adjusted_rand_index"]
    assert cluster_metadata["adjusted_rand_index_segments"] < cluster_metadata["adjusted_rand_index"]
    assert cluster_metadata["segments_count"] > 7
    # No segment mixes lifecycle groups; each is named after its stage.
    data_dir = year[0]
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        mixed = con.execute(
            "SELECT s.segment_id, s.lifecycle_group, list(DISTINCT p.lifecycle_stage ORDER BY p.lifecycle_stage) "
            "FROM clusters c JOIN profiles p USING (date, canonical_id) JOIN segments s USING (date, segment_id) "
            "WHERE date = ? GROUP BY ALL",
            [LAST_DAY],
        ).fetchall()
    assert len(mixed) == cluster_metadata["segments_count"]
    assert all(set(stages) <= set(group.split("+")) for _, group, stages in mixed), mixed
    assert cluster_metadata["customers_with_ground_truth"] == cluster_metadata["dagster/row_count"]
    header = cluster_metadata["k_candidates"].splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "k",
        "inertia",
        "silhouette",
        "calinski_harabasz",
        "davies_bouldin",
        "score",
    ]
    # The scores by k as a chart the asset's page shows without a click (Markdown under 1,000 characters).
    assert cluster_metadata["k_scores"].startswith(f"![combined score by k (higher: better); chosen k = {cluster_metadata['k']}]")
    assert len(cluster_metadata["k_scores"]) < 1000


def test_segment_ids_and_members_carry_over_to_the_next_day(year) -> None:
    data_dir, first, second = year
    before, after = read(data_dir, SEGMENTS, DAY_BEFORE), read(data_dir, SEGMENTS, LAST_DAY)
    assert before["segment_id"].to_pylist() == after["segment_id"].to_pylist()
    assert all(before["is_new"].to_pylist())
    assert not any(after["is_new"].to_pylist())
    assert metadata(second, "clusters")["new_segment_ids"] == []
    migration = metadata(second, "segment_migration")
    assert migration["previous_snapshot"] == DAY_BEFORE.isoformat()
    assert migration["customers_stayed"] >= 0.95 * before["size"].to_numpy().sum()
    # The first snapshot had nothing before it: everyone arrived.
    first_moves = read(data_dir, SEGMENT_MIGRATION, DAY_BEFORE)
    assert first_moves["from_segment_id"].null_count == first_moves.num_rows
    assert pc.sum(first_moves["customers"]).as_py() == before["size"].to_numpy().sum()


def test_robustness_and_viability_score_every_segment(year) -> None:
    data_dir, _, second = year
    scores = read(data_dir, ROBUSTNESS, LAST_DAY).to_pandas()
    segments = read(data_dir, SEGMENTS, LAST_DAY).to_pandas()
    assert sorted(scores.segment_id) == sorted(segments.segment_id)
    assert scores.time_window_windows.eq(2).all()
    assert scores.bootstrap_samples.gt(0).all()
    for column in ("feature_drop_stability", "time_window_stability", "bootstrap_stability", "overall"):
        assert scores[column].between(0, 1).all(), column
    assert set(scores.band) <= {"dissolved", "unstable", "doubtful", "stable", "highly_stable"}
    decisions = read(data_dir, VIABILITY, LAST_DAY).to_pandas()
    assert sorted(decisions.segment_id) == sorted(segments.segment_id)
    assert metadata(second, "viability")["approved_segments"] == int(decisions.approved.sum())
    for row in decisions.itertuples():
        assert len(row.reasons) >= 1
        assert row.approved == (len(row.failed_criteria) == 0)


def test_a_rerun_of_a_snapshot_changes_nothing(year, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    specs = (PROFILES, CLUSTERS, SEGMENTS, SEGMENT_MIGRATION, ROBUSTNESS, VIABILITY)
    before = {spec.name: read(data_dir, spec, LAST_DAY) for spec in specs}
    assert snapshot(instance, data_dir, LAST_DAY).success
    for spec in specs:
        assert read(data_dir, spec, LAST_DAY).equals(before[spec.name]), spec.name
        assert Warehouse(data_dir).partition_days(spec) == [DAY_BEFORE, LAST_DAY]


def test_an_adhoc_rerun_with_other_settings_uses_the_stored_upstream(
    year, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    warehouse = Warehouse(data_dir)
    profile_file = warehouse.partition_path(PROFILES, LAST_DAY)
    stamp = profile_file.stat().st_mtime_ns
    # Three stages of the graph re-run from the Launchpad, as the README's recipe has it.
    result = dg.materialize(
        SNAPSHOT_ASSETS,
        selection=dg.AssetSelection.assets(clusters, robustness, viability),
        instance=instance,
        resources=resources(data_dir),
        partition_key=LAST_DAY.isoformat(),
        run_config=dg.RunConfig(
            {
                "clusters": {"config": {"n_clusters": 4}},
                "robustness": {"config": {"n_bootstrap": 5}},
                "viability": {"config": {"min_segment_size": 1_000_000}},
            }
        ),
    )
    assert result.success
    assert profile_file.stat().st_mtime_ns == stamp
    # A run made in process knows no assets but its own: none is named out of date (see the next test).
    assert "out_of_date_after_this_run" not in metadata(result, "clusters")
    cluster_metadata = metadata(result, "clusters")
    assert cluster_metadata["k"] == 4
    # Said as the user's choice, without an elbow or a combined score that were never computed.
    assert cluster_metadata["k_rule"] == "fixed by the user: n_clusters = 4 in the run's config (no other k was tried)"
    assert "elbow_k" not in cluster_metadata
    header, _, row = cluster_metadata["k_candidates"].splitlines()
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "k",
        "inertia",
        "silhouette",
        "calinski_harabasz",
        "davies_bouldin",
    ]
    assert row.split("|")[1].strip() == "4" and "nan" not in row.lower()
    # What the UI shows on each asset's Partitions tab for the day (Dagster 1.13 shows the staleness of
    # a partitioned asset per partition): the stages re-run after clusters are up to date, the one left
    # out (segment_migration) is marked stale, naming the new clusters as the cause.
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    day = LAST_DAY.isoformat()
    for fresh in ("profiles", "clusters", "robustness", "viability"):
        assert resolver.get_status(dg.AssetKey(fresh), day) == StaleStatus.FRESH, fresh
    assert resolver.get_status(dg.AssetKey("segment_migration"), day) == StaleStatus.STALE
    (cause,) = resolver.get_stale_causes(dg.AssetKey("segment_migration"), day)
    assert cause.dependency == AssetKeyPartitionKey(dg.AssetKey("clusters"), day)
    assert cause.reason == "has a new dependency materialization"
    segments = metadata(result, "clusters")["segments_count"]
    # Four behaviour clusters, each split by the lifecycle groups of its customers.
    assert segments > 4
    assert read(data_dir, ROBUSTNESS, LAST_DAY)["bootstrap_samples"].to_pylist() == [5] * segments
    decisions = read(data_dir, VIABILITY, LAST_DAY).to_pylist()
    assert len(decisions) == segments
    assert not any(row["approved"] for row in decisions)
    assert all("min_segment_size" in row["failed_criteria"] for row in decisions)
    assert all(any("below the minimum of 1000000" in reason for reason in row["reasons"]) for row in decisions)


def test_a_transaction_log_runs_through_the_whole_graph(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """Customer, date, amount and nothing else: the features it cannot support are null and said so."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    settings = synthetic.SyntheticSettings(n_customers=1500, bad_row_rate=0.0)
    days = days_between(date(2025, 1, 1), date(2025, 3, 31))
    purchases = []
    for day in days:
        events = synthetic.events_for_day(settings, day)
        bought = events.filter(pc.equal(events["event_type"], "purchase"))
        purchases.append(
            pa.table(
                {
                    "customer": bought["customer_id"],
                    "date": pa.array([day.isoformat()] * bought.num_rows, pa.string()),
                    "total": bought["amount"],
                }
            )
        )
    pacsv.write_csv(pa.concat_tables(purchases), incoming / "orders.csv")
    (incoming / "merges.csv").write_text("old_id,new_id,merged_at\n")
    source = {
        "kind": "files",
        "incoming_dir": str(incoming),
        "events_path": "orders.csv",
        "id_history_path": "merges.csv",
        "event_columns": {"customer": "customer_id", "date": "timestamp", "total": "amount"},
    }
    data_dir = tmp_path / "data"
    ingested = dg.materialize(
        [raw_events, id_history],
        instance=instance,
        resources=resources(data_dir, **source),
        tags=range_tags(days[0], days[-1]),
    )
    assert ingested.success
    result = dg.materialize(
        [*SNAPSHOT_ASSETS, actionability, explanations],
        instance=instance,
        resources=resources(data_dir, **source) | {"llm": LLMResource()},
        partition_key=days[-1].isoformat(),
    )
    assert result.success
    profile_metadata = metadata(result, "profiles")
    assert {"sessions", "page_views", "category_shares", "channel_shares", "mobile_share", "morning_share"} <= set(
        profile_metadata["unsupported_features"]
    )
    assert profile_metadata["window_days_present"] == len(days)
    stored = read(data_dir, PROFILES, days[-1])
    assert stored["sessions"].null_count == stored.num_rows
    assert stored["frequency"].null_count == 0
    without = metadata(result, "clusters")["features_without_values"]
    assert {"sessions", "pages_per_session", "cart_conversion_rate", "category_shares", "channel_shares"} <= set(
        without
    )
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())
    assert read(data_dir, VIABILITY, days[-1]).num_rows == metadata(result, "clusters")["segments_count"]
    # Without categories WHAT is the lifecycle offer of the segment's largest stage, scored by its share.
    # Without channels, HOW is the owned channel, email by default.
    evaluations = read(data_dir, ACTIONABILITY, days[-1]).to_pylist()
    assert len(evaluations) == metadata(result, "clusters")["segments_count"]
    mixes = {row["segment_id"]: dict(row["lifecycle_mix"]) for row in read(data_dir, SEGMENTS, days[-1]).to_pylist()}
    for row in evaluations:
        stage, share = max(mixes[row["segment_id"]].items(), key=lambda item: (item[1], item[0]))
        assert row["what_score"] == pytest.approx(share, abs=0.006)
        assert row["what_evidence"].startswith(
            f"No product categories in the data: the lifecycle offer is a {LIFECYCLE_OFFERS[stage]}, for the "
        )
    assert all(row["how_score"] == 0.5 for row in evaluations)
    assert all(row["how_evidence"].startswith("No channel in the data: the owned channel email") for row in evaluations)
    # Plain dates carry no time of day: WHEN is the purchase rhythm and the weekends, never a day part.
    assert all("repeat buyer" in row["when_evidence"] and "UTC" not in row["when_evidence"] for row in evaluations)
    assert all("weekends" in row["when_evidence"] for row in evaluations)
    # The verdicts follow the rubric: 3 strong of the 4 measurable.
    rubric = Rubric()
    for row in evaluations:
        assert row["actionable"] == rubric.verdict({d: row[f"{d}_score"] for d in ("what", "when", "how", "who")})
    explained = read(data_dir, EXPLANATIONS, days[-1]).to_pylist()
    assert len(explained) == len(evaluations)
    targeted = [row for row in explained if row["recommendations"]]
    assert all(item["channel"] == "email" for row in targeted for item in row["recommendations"])
    # Another owned channel, set on actionability: the explanations follow the rubric stored with its answers.
    by_sms = dg.materialize(
        [actionability, explanations],
        instance=instance,
        resources=resources(data_dir, **source) | {"llm": LLMResource()},
        partition_key=days[-1].isoformat(),
        run_config=dg.RunConfig({"actionability": {"config": {"owned_channels": ["sms"]}}}),
    )
    assert by_sms.success
    assert all(evaluation.passed for evaluation in by_sms.get_asset_check_evaluations())
    assert all(
        row["how_evidence"].startswith("No channel in the data: the owned channel sms")
        for row in read(data_dir, ACTIONABILITY, days[-1]).to_pylist()
    )
    assert [
        item["channel"] for row in read(data_dir, EXPLANATIONS, days[-1]).to_pylist() for item in row["recommendations"]
    ] == ["sms" for row in targeted for _ in row["recommendations"]]


@pytest.mark.parametrize(
    ("asset", "missing"),
    [(profiles, "merge_map"), (clusters, "profiles"), (segment_migration, "clusters"), (viability, "segments")],
)
def test_a_stage_without_its_upstream_fails_naming_it(
    instance: dg.DagsterInstance, tmp_path: Path, asset: dg.AssetsDefinition, missing: str
) -> None:
    data_dir = tmp_path / "data"
    result = dg.materialize(
        [asset], instance=instance, resources=resources(data_dir), partition_key="2025-02-01", raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{missing} for 2025-02-01 is not materialized" in str(failure.event_specific_data.error)


def test_a_damaged_stored_file_fails_the_next_stage_naming_the_file(
    year, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Bytes changed inside a data page of a stored file: raw_events read by profiles (through DuckDB,
    by its rules), profiles read by clusters (by the page checksums). Neither computes on it."""
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    warehouse = Warehouse(data_dir)
    stored = {spec.name: warehouse.partition_path(spec, LAST_DAY).read_bytes() for spec in (PROFILES, CLUSTERS)}
    events = warehouse.partition_path(RAW_EVENTS, date(2025, 12, 20))
    damage_page(events, "timestamp")
    failure = _step_failure(_failing(instance, data_dir, profiles), "profiles")
    assert "DataIntegrityError" in failure and str(events) in failure
    assert warehouse.partition_path(PROFILES, LAST_DAY).read_bytes() == stored["profiles"]  # nothing written
    damage_page(warehouse.partition_path(PROFILES, LAST_DAY), "canonical_id")
    failure = _step_failure(_failing(instance, data_dir, clusters), "clusters")
    assert "DataIntegrityError" in failure and "CRC checksum verification failed" in failure
    assert str(warehouse.partition_path(PROFILES, LAST_DAY)) in failure
    assert warehouse.partition_path(CLUSTERS, LAST_DAY).read_bytes() == stored["clusters"]


def _failing(instance: dg.DagsterInstance, data_dir: Path, asset: dg.AssetsDefinition) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        instance=instance,
        resources=resources(data_dir),
        partition_key=LAST_DAY.isoformat(),
        raise_on_error=False,
    )


def _step_failure(result: dg.ExecuteInProcessResult, step: str) -> str:
    """The error of the run's one failed step, which must be `step`, with its causes."""
    assert not result.success
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == step
    error = failure.event_specific_data.error
    return str(error) + "".join(str(cause) for cause in _causes(error))


def _causes(error):
    while error.cause is not None:
        error = error.cause
        yield error


def test_robustness_refuses_profiles_changed_after_clusters(year, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    warehouse = Warehouse(data_dir)
    stored = warehouse.read_partition(PROFILES, LAST_DAY)
    warehouse.write_partition(PROFILES, LAST_DAY, stored.slice(1))
    with pytest.raises(SensitivityTestError, match="profiles changed after clusters ran; re-run clusters"):
        assess_snapshot(warehouse, LAST_DAY, RobustnessSettings(n_bootstrap=2), [], seed=1)


def test_robustness_reads_assignments_stored_in_any_order(year, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    warehouse = Warehouse(data_dir)
    settings = RobustnessSettings(n_bootstrap=2)
    in_order = assess_snapshot(warehouse, LAST_DAY, settings, [(0.5, 0)], seed=1).table
    stored = warehouse.read_partition(CLUSTERS, LAST_DAY)
    reversed_rows = stored.take(pa.array(range(stored.num_rows - 1, -1, -1)))
    warehouse.write_partition(CLUSTERS, LAST_DAY, reversed_rows)
    assert assess_snapshot(warehouse, LAST_DAY, settings, [(0.5, 0)], seed=1).table.equals(in_order)
    # An assignment to a segment that is not stored is refused, in either order.
    renamed = stored.set_column(1, "segment_id", pc.replace_substring(stored["segment_id"], "S01", "S99"))
    warehouse.write_partition(CLUSTERS, LAST_DAY, renamed)
    with pytest.raises(SensitivityTestError, match=r"name segments that are not stored: \['S99'\]"):
        assess_snapshot(warehouse, LAST_DAY, settings, [], seed=1)


def test_the_stored_tables_keep_their_schemas(year) -> None:
    data_dir, _, _ = year
    warehouse = Warehouse(data_dir)
    for spec in (PROFILES, CLUSTERS, SEGMENTS, SEGMENT_MIGRATION, ROBUSTNESS, VIABILITY):
        assert pq.read_schema(warehouse.partition_path(spec, LAST_DAY)).remove_metadata() == spec.schema, spec.name


def test_segments_have_names_and_traits(year) -> None:
    data_dir, _, _ = year
    segments = read(data_dir, SEGMENTS, LAST_DAY).to_pylist()
    names = [segment["name"] for segment in segments]
    assert len(set(names)) == len(names)
    assert all(name.endswith("shoppers") or name.endswith(")") for name in names)
    assert sum(len(segment["traits"]) > 0 for segment in segments) >= len(segments) - 1
    assert abs(sum(segment["share"] for segment in segments) - 1) < 1e-9
    # Every centroid is over the same feature columns.
    columns = {tuple(key for key, _ in segment["centroid"]) for segment in segments}
    assert len(columns) == 1
    assert any(segment["total_clv"] > 0 for segment in segments)
    assert all(segment["size"] >= 1 for segment in segments)


def test_stored_rows_are_the_records_models(year) -> None:
    """Every stored segment, robustness and viability row validates as its pydantic model, field for field."""
    data_dir, _, _ = year
    for spec, model in ((SEGMENTS, Segment), (ROBUSTNESS, RobustnessScore), (VIABILITY, SegmentViability)):
        rows = read(data_dir, spec, LAST_DAY).to_pylist()
        assert rows
        for row in rows:
            record = model.model_validate(row)
            dumped = record.model_dump()
            assert set(dumped) == set(spec.columns), spec.name
            for column in ("centroid", "feature_means", "lifecycle_mix"):
                if column in row:
                    assert dumped[column] == dict(row[column])
                    row = {**row, column: dumped[column]}
            assert dumped == row, spec.name


def test_a_backfill_makes_the_days_of_its_range_in_one_run_as_day_by_day(
    year, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """merge_map, profiles and clusters have a single-run backfill policy: one run over the range,
    the days in date order (each day's segment IDs following the day before), exactly as runs of
    one day each make them."""
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    specs = (MERGE_MAP, PROFILES, CLUSTERS, SEGMENTS)
    for spec in specs:
        shutil.rmtree(Warehouse(data_dir).table_dir(spec))
    result = dg.materialize(
        [merge_map, profiles, clusters],
        instance=instance,
        resources=resources(data_dir),
        tags=range_tags(DAY_BEFORE, LAST_DAY),
    )
    assert result.success
    events = [event for event in result.get_asset_materialization_events() if event.asset_key.path == ["clusters"]]
    assert sorted(event.partition for event in events) == [DAY_BEFORE.isoformat(), LAST_DAY.isoformat()]
    by_day = {event.partition: {k: v.value for k, v in event.materialization.metadata.items()} for event in events}
    assert by_day[DAY_BEFORE.isoformat()]["previous_snapshot"] == "none"
    assert by_day[LAST_DAY.isoformat()]["previous_snapshot"] == DAY_BEFORE.isoformat()
    assert by_day[LAST_DAY.isoformat()]["run_days"] == 2
    for day in (DAY_BEFORE, LAST_DAY):
        for spec in specs:
            assert read(data_dir, spec, day).equals(read(year[0], spec, day)), (spec.name, day)
    checks = result.get_asset_check_evaluations()
    # merge_map 4, profiles 2, clusters 2: one result of each per day, under that day's partition.
    assert sorted((check.asset_key.path[0], check.partition) for check in checks) == sorted(
        (asset, day.isoformat())
        for asset, count in (("merge_map", 4), ("profiles", 2), ("clusters", 2))
        for day in (DAY_BEFORE, LAST_DAY)
        for _ in range(count)
    )
    assert all(check.passed for check in checks)
    stored = [
        (record.partition, record.status.value)
        for key in clusters.check_keys
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
        if record.run_id == result.run_id
    ]
    assert sorted(stored) == sorted((day.isoformat(), "SUCCEEDED") for day in (DAY_BEFORE, LAST_DAY) for _ in range(2))


def test_an_adhoc_rerun_from_the_command_line_names_the_stages_it_left_out_of_date(
    year, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """As an operator re-runs one stage (`dagster asset materialize`, as the Launchpad does): the stages
    after it whose partition of the day is stored were made from the segments it replaced; the run's
    clusters name them, and Dagster marks each of them stale for the day."""
    data_dir = tmp_path / "data"
    shutil.copytree(year[0], data_dir)
    day = LAST_DAY.isoformat()
    # Dagster's own selection of what comes after clusters, not the asset's walk of the graph.
    after = dg.AssetSelection.assets(clusters).downstream(include_self=False).resolve(defs.resolve_asset_graph())
    stored = sorted(
        key.to_user_string()
        for key in after
        if instance.fetch_materializations(dg.AssetRecordsFilter(key, asset_partitions=[day]), limit=1).records
    )
    assert {"segment_migration", "robustness", "viability"} <= set(stored)
    command = materialize_command(["clusters"], partition=day, config={"ops": {"clusters": {"config": {"n_clusters": 4}}}})
    process = subprocess.run(
        command,
        cwd=REPOSITORY,
        env=service_environment(Path(instance.root_directory), data_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    event = instance.get_latest_materialization_event(clusters.key)
    assert event.asset_materialization.partition == day
    assert sorted(event.asset_materialization.metadata["out_of_date_after_this_run"].value) == stored
    assert "are now out of date (stale on their Partitions tab)" in process.stdout + process.stderr
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    for name in stored:
        assert resolver.get_status(dg.AssetKey(name), day) == StaleStatus.STALE, name
    assert resolver.get_status(clusters.key, day) == StaleStatus.FRESH
