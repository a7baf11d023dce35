"""`make demo`'s program, run as a user runs it, on a temporary data folder and instance."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from segmentation_pipeline.core.reporting.publish import load_report
from segmentation_pipeline.core.reporting.render import headline
from segmentation_pipeline.defs.jobs import SNAPSHOT_ASSETS

REPOSITORY = Path(__file__).resolve().parents[1]


def run_demo(tmp_path: Path, *args: str, **settings: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`make demo`'s program on a new data folder and instance, with the given SEGMENTATION_* settings."""
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
    env |= {"SEGMENTATION_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)} | settings
    result = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.demo", *args],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, data_dir


def test_the_demo_materializes_the_graph_and_says_where_it_went(tmp_path: Path) -> None:
    result, data_dir = run_demo(tmp_path, "--days", "3", "--snapshots", "2")
    assert "History 2025-01-01 .. 2025-01-03 (3 days), source: synthetic" in result.stdout
    assert f"Catalog:  {data_dir / 'segmentation.duckdb'}" in result.stdout
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM raw_events").fetchone()[0]
        for table in ("merge_map", "profiles", "segments", "robustness", "viability", "actionability", "explanations"):
            (latest,) = con.execute(f"SELECT DISTINCT date FROM {table}_latest").fetchall()
            assert latest[0].isoformat() == "2025-01-03", table
        profiled = con.execute("SELECT count(*) FROM profiles_latest").fetchone()[0]
        segments = con.execute("SELECT segment_id, name, size FROM segments_latest ORDER BY segment_id").fetchall()
        approved = con.execute("SELECT count(*) FILTER (WHERE approved) FROM viability_latest").fetchone()[0]
        actionable = con.execute("SELECT count(*) FILTER (WHERE actionable) FROM actionability_latest").fetchone()[0]
        campaigns = con.execute(
            "SELECT segment_id, c.channel, c.audience_size FROM explanations_latest, unnest(recommendations) AS r(c)"
        ).fetchall()
    assert f"raw_events:  {events:,} events" in result.stdout
    assert f"profiles:    {profiled:,} customers" in result.stdout
    assert f"segments:    {len(segments)}, {approved} approved for targeting, {actionable} actionable" in result.stdout
    assert "insights:    answers by mock (rules), source: mock" in result.stdout
    assert campaigns
    for segment_id, channel, audience in campaigns:
        assert f"  {segment_id:<4} {channel}, " in result.stdout
        assert f"({audience:,} customers)" in result.stdout
    for segment_id, name, size in segments:
        assert f"  {segment_id:<4} {name[:52]:<52} {size:>9,} " in result.stdout
    report_dir = data_dir.resolve() / "reports" / "date=2025-01-03"
    assert f"  Report:   {report_dir / 'report.html'}" in result.stdout
    saved = load_report(report_dir)
    assert f"  report:      {headline(saved)}" in result.stdout
    assert [item.segment_id for item in saved.segments] == [segment_id for segment_id, _, _ in segments]
    assert (report_dir / "dashboard.png").stat().st_size > 10_000
    # The ingestion run, then one snapshot a day in date order, each timed, kept in the instance for the UI
    # as runs of the named jobs of the code location `make dev` loads (its Jobs pages and timeline).
    assert re.search(
        r"^Ingesting 3 days \(2025-01-01 \.\. 2025-01-03\) in one run \.\.\.\n  done in \d+ s\n"
        r"Resolving IDs, profiling, segmenting, testing, explaining and reporting as of 2025-01-02 \.\.\.\n"
        r"  done in \d+ s\n"
        r"Resolving IDs, profiling, segmenting, testing, explaining and reporting as of 2025-01-03 \.\.\.\n"
        r"  done in \d+ s\n",
        result.stdout,
    )
    assert re.search(r"\nThe demo took \d+ s \(2 snapshots\)\.\n$", result.stdout)
    assert len(list((tmp_path / "dagster_home" / "storage").iterdir())) == 3
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = sorted(instance.get_runs(), key=lambda run: run.tags.get("dagster/partition", ""))
        assert [(run.job_name, run.tags.get("dagster/partition"), run.status) for run in runs] == [
            ("ingestion", None, dg.DagsterRunStatus.SUCCESS),
            ("segmentation", "2025-01-02", dg.DagsterRunStatus.SUCCESS),
            ("segmentation", "2025-01-03", dg.DagsterRunStatus.SUCCESS),
        ]
        assert runs[0].tags["dagster/asset_partition_range_end"] == "2025-01-03"
        assert {run.remote_job_origin.location_name for run in runs} == {"segmentation_pipeline"}
        assert {key.to_user_string() for key in runs[1].asset_selection} == {
            key.to_user_string() for asset in SNAPSHOT_ASSETS for key in asset.keys
        }
        # The UI lists a job's runs by the location they were filed under.
        filed = dg.RunsFilter(job_name="segmentation", tags={".dagster/repository": "__repository__@segmentation_pipeline"})
        assert len(instance.get_runs(filters=filed)) == 2
    # Dagster's known, harmless warnings are silenced, and nothing else warned.
    assert "Warning" not in result.stderr and "warnings.warn" not in result.stderr, result.stderr[-3000:]
    assert f"  migration:   Since 2025-01-02: {saved.migration.stayed:,} customers stayed" in result.stdout
    assert (data_dir / "reports" / "date=2025-01-02" / "report.json").exists()


def test_the_demo_refuses_an_empty_history() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.demo", "--days", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "expected at least 1 day, got 0" in result.stderr


def test_the_demo_refuses_a_history_past_the_last_partition_and_names_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
    env |= {"SEGMENTATION_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.demo", "--days", "400"],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "the history would end on 2026-02-04, after the last daily partition, 2025-12-31: set "
        "SEGMENTATION_END_DATE=2026-02-04 (make demo END=2026-02-04; make dev END=2026-02-04 then shows those days)"
    ) in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "home").exists()


CDNOW = REPOSITORY / "segmentation_pipeline_tests" / "data" / "cdnow" / "CDNOW_sample.txt"


def test_the_shipped_cdnow_transactions_are_the_published_sample() -> None:
    """data/samples/cdnow_transactions.csv is CDNOW_sample.txt (as lifetimes ships it) with a header and ISO dates."""
    lines = ["customer,date,quantity,amount"]
    for row in CDNOW.read_text().split("\n"):
        if row.strip():
            _, customer, day, quantity, amount = row.split()
            lines.append(f"{customer},{day[:4]}-{day[4:6]}-{day[6:]},{quantity},{amount}")
    assert (REPOSITORY / "data" / "samples" / "cdnow_transactions.csv").read_text() == "\n".join(lines) + "\n"


def test_the_demo_runs_a_transaction_log_to_a_chosen_day(tmp_path: Path) -> None:
    """The CDNOW sample as a retailer's plain transaction log (customer, date, CDs, dollars), through the
    whole graph from the file source, to the snapshot of the end of its 39 calibration weeks: the
    README's command for it, `make demo SOURCE_CONFIG=data/samples/cdnow.json START=1997-01-01 ...`."""
    result, data_dir = run_demo(
        tmp_path,
        *("--as-of", "1997-09-30", "--snapshots", "1"),
        SEGMENTATION_SOURCE_CONFIG="data/samples/cdnow.json",
        SEGMENTATION_START_DATE="1997-01-01",
    )
    assert "History 1997-01-01 .. 1997-09-30 (273 days), source: files" in result.stdout
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM profiles_latest").fetchone()[0] == 2357
        models = dict(con.execute("SELECT name, chosen FROM clv_backtest_latest WHERE kind = 'model'").fetchall())
        assert set(models) == {"bg_nbd", "mbg_nbd", "pareto_nbd"} and sum(models.values()) == 1
        (chosen,) = [name for name, used in models.items() if used]
        assert con.execute("SELECT DISTINCT clv_method FROM profiles_latest WHERE frequency > 0").fetchall() == [
            (f"{chosen}_gamma_gamma",)
        ]
        # One-time buyers: a churn risk of their own, rising with their silence.
        once = con.execute(
            "SELECT recency_days, churn_risk FROM profiles_latest WHERE purchase_days = 1 ORDER BY recency_days"
        ).fetchall()
        assert len(once) > 1000
        # The cohort first bought on the 90 days of one quarter: a distinct risk for every distinct silence.
        assert len({round(risk, 9) for _, risk in once}) == len({days for days, _ in once}) > 60
        risks = [risk for _, risk in once]
        assert all(earlier <= later + 1e-12 for earlier, later in zip(risks, risks[1:]))
        stages = dict(con.execute("SELECT lifecycle_stage, count(*) FROM profiles_latest GROUP BY 1").fetchall())
        assert stages["lapsed"] > 1000 and stages["loyal"] > 100
        # Segments are built within lifecycle groups: none mixes them, none holds half the customers.
        groups = con.execute(
            "SELECT s.segment_id, count(DISTINCT CASE WHEN p.lifecycle_stage IN ('at_risk', 'lapsed') THEN 'lapsing' "
            "WHEN p.lifecycle_stage IN ('active', 'loyal') THEN 'active' ELSE p.lifecycle_stage END), max(s.share) "
            "FROM clusters_latest c JOIN profiles_latest p USING (canonical_id) JOIN segments_latest s USING (segment_id) "
            "GROUP BY 1"
        ).fetchall()
        assert len(groups) >= 4 and all(mixed == 1 and share <= 0.5 for _, mixed, share in groups)
        # A transaction log can be acted on: at least two segments are approved and actionable, their
        # campaigns use the lifecycle offer and the owned channel.
        ready = con.execute(
            "SELECT count(*) FROM viability_latest v JOIN actionability_latest a USING (segment_id) "
            "WHERE v.approved AND a.actionable"
        ).fetchone()[0]
        assert ready >= 2
        channels = con.execute(
            "SELECT DISTINCT r.channel FROM explanations_latest, unnest(recommendations) AS t(r)"
        ).fetchall()
        assert channels == [("email",)]
        # Their campaigns left the engine: one list per campaign, a control group of each kept back.
        exported = con.execute(
            "SELECT campaign_key, customers, control_customers FROM audience_exports_latest ORDER BY 1"
        ).fetchall()
        groups = dict(
            con.execute(
                "SELECT campaign_key || '/' || \"group\", count(*) FROM audiences_latest GROUP BY 1"
            ).fetchall()
        )
    assert len(exported) >= 2
    for key, customers, control in exported:
        assert groups[f"{key}/treatment"] == customers and groups.get(f"{key}/control", 0) == control
        listed = (data_dir / "exports" / "date=1997-09-30" / key / "audience.csv").read_text().splitlines()
        assert len(listed) == customers + 1
    assert "Audiences exported to" in result.stdout
