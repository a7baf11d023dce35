"""report materialized by Dagster over two stored snapshots: files, metadata, recorded settings, re-runs."""

import base64
import io
import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from PIL import Image

from segmentation_pipeline.core import quality
from segmentation_pipeline.core.reporting.publish import load_report
from segmentation_pipeline.core.schemas import SEGMENT_MIGRATION, SEGMENTS
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.defs.assets.reporting import report
from segmentation_pipeline.defs.assets.segmentation import ClustersConfig, RobustnessConfig

from .snapshots import DAY, build_snapshots, resources

PREVIOUS_DAY = DAY - timedelta(days=1)
REPORT_CONFIG = dg.RunConfig({"report": {"config": {"sample_per_segment": 200}}})


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, instance: dg.DagsterInstance) -> Path:
    """Two consecutive snapshots, so that the second has a previous one to migrate from."""
    data_dir = tmp_path_factory.mktemp("reports") / "data"
    build_snapshots(instance, data_dir, [PREVIOUS_DAY, DAY])
    return data_dir


@pytest.fixture(scope="module")
def reported(instance: dg.DagsterInstance, data_dir: Path) -> dg.ExecuteInProcessResult:
    return materialize_report(instance, data_dir)


def materialize_report(instance: dg.DagsterInstance, data_dir: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [report],
        instance=instance,
        resources=resources(data_dir),
        partition_key=DAY.isoformat(),
        run_config=REPORT_CONFIG,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str = "report") -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def latest_run_id(instance: dg.DagsterInstance, asset: str) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[DAY.isoformat()]), limit=1
    ).records
    return records[0].run_id


def test_the_report_is_written_checked_and_shown_in_the_ui(reported, data_dir: Path) -> None:
    assert reported.success
    (check,) = reported.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("report_complete", True), check.description
    folder = Warehouse(data_dir).report_dir(DAY)
    assert folder == data_dir.resolve() / "reports" / "date=2025-12-31"
    saved = load_report(folder)
    values = metadata(reported)
    assert values["html_path"] == str(folder / "report.html")
    assert values["json_path"] == str(folder / "report.json")
    assert values["markdown_path"] == str(folder / "report.md")
    assert values["pdf_path"] == str(folder / "summary.pdf")
    assert values["campaigns_to_launch"] == len(saved.campaigns) > 0
    assert values["summary"].index("**Campaigns to launch**") < values["summary"].index("**Segments**")
    for brief in saved.campaigns:
        assert f"| {brief.segment_id} {brief.segment_name} |" in values["summary"].split("**Segments**")[0]
    assert values["segments"] == saved.totals.segments
    assert values["segments_ready_for_campaign"] == saved.totals.targetable
    for item in saved.segments:
        assert f"| {item.segment_id} {item.name} | {item.segment.size:,} |" in values["summary"]
    prefix = "![dashboard](data:image/png;base64,"
    assert values["dashboard"].startswith(prefix) and values["dashboard"].endswith(")")
    with Image.open(io.BytesIO(base64.b64decode(values["dashboard"][len(prefix) : -1]))) as thumbnail:
        assert thumbnail.format == "PNG"
        assert thumbnail.width == 1100  # scaled down from the report's dashboard for the event log
    assert values["charts"] == [chart.file for chart in saved.charts]
    assert "segment_migration.png" in values["charts"]  # the second snapshot has a previous one


def test_the_published_report_makes_its_snapshot_the_latest_of_every_view(reported, data_dir: Path) -> None:
    """Both days' stages are stored, only the last day's report is published: that day is the latest."""
    assert metadata(reported)["latest_complete_snapshot"] == DAY.isoformat()
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        assert con.sql("SELECT as_of FROM latest_snapshot").fetchall() == [(DAY,)]
        assert con.sql("SELECT as_of FROM complete_snapshots").fetchall() == [(DAY,)]
        for table in ("merge_map", "profiles", "clusters", "segments", "robustness", "viability", "explanations"):
            assert con.sql(f"SELECT DISTINCT date FROM {table}_latest").fetchall() == [(DAY,)], table
        assert con.sql("SELECT count(DISTINCT date) FROM segments").fetchall() == [(2,)]


def test_the_report_records_the_settings_each_stage_ran_with(reported, instance, data_dir: Path) -> None:
    stages = {stage.stage: stage for stage in load_report(Warehouse(data_dir).report_dir(DAY)).settings.stages}
    assert list(stages) == [
        "merge_map",
        "clv_backtest",
        "profiles",
        "clusters",
        "segment_migration",
        "robustness",
        "viability",
        "actionability",
        "explanations",
        "audiences",
        "audience_exports",
        "campaign_results",
        "report",
    ]
    # The runs that stored the stages are on the report's materialization, not in its files.
    stage_runs = metadata(reported)["stage_runs"]
    for name in ("merge_map", "clusters", "robustness", "explanations"):
        assert stages[name].recorded
        assert stage_runs[name] == latest_run_id(instance, name)
    assert stage_runs["report"] == reported.run_id
    assert "run_id" not in (Warehouse(data_dir).report_dir(DAY) / "report.json").read_text()
    # Given in the run config, and the defaults it left out, as the stage saw them.
    assert stages["robustness"].config == RobustnessConfig(n_bootstrap=5).model_dump()
    assert stages["robustness"].given == {"n_bootstrap": 5}
    assert stages["clusters"].given == {}
    assert stages["clusters"].config == ClustersConfig().model_dump()
    assert stages["report"].config == stages["report"].given == {"sample_per_segment": 200}
    settings = load_report(Warehouse(data_dir).report_dir(DAY)).settings
    assert (settings.source, settings.data_dir) == ("synthetic", str(data_dir.resolve()))


def test_migration_is_the_stored_one_since_the_previous_snapshot(reported, data_dir: Path) -> None:
    saved = load_report(Warehouse(data_dir).report_dir(DAY))
    moves = Warehouse(data_dir).read_partition(SEGMENT_MIGRATION, DAY).to_pylist()
    assert saved.migration.previous_as_of == PREVIOUS_DAY
    assert len(saved.migration.moves) == len(moves)
    assert saved.migration.stayed == sum(
        row["customers"] for row in moves if row["from_segment_id"] and row["from_segment_id"] == row["to_segment_id"]
    )
    assert saved.migration.stayed > 0
    assert saved.migration.arrived == sum(row["customers"] for row in moves if row["from_segment_id"] is None)
    text = (Warehouse(data_dir).report_dir(DAY) / "report.md").read_text()
    assert f"Since {PREVIOUS_DAY}: {saved.migration.stayed:,} customers stayed in their segment" in text


def test_a_re_run_writes_the_same_files(reported, instance, data_dir: Path) -> None:
    folder = Warehouse(data_dir).report_dir(DAY)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    again = materialize_report(instance, data_dir)
    assert again.success
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(path.name for path in folder.parent.iterdir()) == [".versions", "date=2025-12-31"]
    assert [path.name for path in (folder.parent / ".versions").glob("date=*")] == [folder.resolve().name]


def test_the_report_check_fails_on_a_damaged_report(reported, data_dir: Path, tmp_path: Path) -> None:
    store = Warehouse(data_dir)
    outcome = quality.report_complete(store, DAY)
    assert outcome.passed and outcome.metadata == {
        "problems": 0,
        "segments": len(load_report(store.report_dir(DAY)).segments),
    }
    missing = quality.report_complete(store, PREVIOUS_DAY)  # stages stored, report never made
    assert not missing.passed
    assert "no report at" in missing.summary
    saved = json.loads((store.report_dir(DAY) / "report.json").read_text())
    damaged = Warehouse(tmp_path / "data")
    damaged.report_dir(DAY).mkdir(parents=True)
    for path in store.report_dir(DAY).iterdir():
        (damaged.report_dir(DAY) / path.name).write_bytes(path.read_bytes())
    saved["segments"] = saved["segments"][1:]
    (damaged.report_dir(DAY) / "report.json").write_text(json.dumps(saved))
    damaged.write_partition(SEGMENTS, DAY, store.read_partition(SEGMENTS, DAY))
    outcome = quality.report_complete(damaged, DAY)
    assert not outcome.passed
    assert "report.json lists segments" in outcome.summary


def test_clusters_shows_how_k_was_chosen(reported, instance: dg.DagsterInstance) -> None:
    event = instance.get_latest_materialization_event(dg.AssetKey("clusters"))
    chart = event.asset_materialization.metadata["k_selection_chart"].value
    prefix = "![k selection](data:image/png;base64,"
    assert chart.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(chart[len(prefix) : -1]))) as picture:
        assert picture.format == "PNG" and picture.width > 500
