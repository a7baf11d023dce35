"""core.reporting: the report gathered from a stored snapshot, its files, charts and how a browser shows it."""

import html
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from datetime import date, timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from segmentation_pipeline.core.errors import DataIntegrityError, PipelineError, ReportGenerationError
from segmentation_pipeline.core.llm.facts import stored_snapshot_facts
from segmentation_pipeline.core.profiles import ProfileSettings, build_profiles
from segmentation_pipeline.core.reporting import charts
from segmentation_pipeline.core.reporting.document import (
    KEY_FEATURES,
    Migration,
    RunSettings,
    SegmentationReport,
    SegmentMove,
    StageSettings,
    _migration,
    customer_flows,
    gather_report,
    segment_changes,
)
from segmentation_pipeline.core.reporting.publish import load_report, publish_report, verify_report
from segmentation_pipeline.core.reporting.render import JSON_FILE, exports_line, markdown
from segmentation_pipeline.core.reporting.render import html as render_html
from segmentation_pipeline.core.schemas import (
    ACTIONABILITY,
    AUDIENCE_EXPORTS,
    CLUSTERS,
    CLV_BACKTEST,
    EXPLANATIONS,
    PROFILES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENT_MIGRATION,
    SEGMENTS,
    VIABILITY,
    ActionabilityEvaluation,
    RobustnessScore,
    Segment,
    SegmentExplanation,
    SegmentViability,
)
from segmentation_pipeline.core.warehouse import Warehouse

from .snapshots import DAY, build_snapshots

SETTINGS = RunSettings(
    data_dir="data",
    source="synthetic",
    stages=[StageSettings(stage="robustness", recorded=True, config={"n_bootstrap": 5, "windows": [0.5, 1.0]})],
)


#: The charts of a first snapshot, in the report's order: every chart but the migration.
FIRST_SNAPSHOT_CHARTS = [
    "dashboard",
    "segment_sizes",
    "feature_distributions",
    "robustness_heatmap",
    "actionability_heatmap",
    "clv_by_segment",
    "clv_tracking",
    "clv_calibration",
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("reporting") / "data"
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        build_snapshots(instance, data_dir, [DAY])
    return data_dir


@pytest.fixture
def store(snapshot: Path, tmp_path: Path) -> Warehouse:
    copy = tmp_path / "data"
    shutil.copytree(snapshot, copy)
    return Warehouse(copy)


@pytest.fixture(scope="module")
def published(snapshot: Path):
    store = Warehouse(snapshot)
    return publish_report(gather_report(store, DAY, SETTINGS), store.report_dir(DAY))


def test_the_report_round_trips_through_its_json(published) -> None:
    loaded = load_report(published.json_path)
    assert loaded == published.report
    assert isinstance(loaded.segments[0].explanation, SegmentExplanation)
    assert loaded.settings.stages[0].config == {"n_bootstrap": 5, "windows": [0.5, 1.0]}
    # And again through a dump of the loaded one: nothing drifts (dates, nested models, maps).
    assert SegmentationReport.model_validate_json(loaded.model_dump_json()) == published.report
    assert load_report(published.folder) == loaded


def test_a_file_that_is_not_a_report_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / JSON_FILE).write_text('{"as_of": "2025-12-31"}')
    with pytest.raises(ReportGenerationError, match=r"report.json is not a segmentation report"):
        load_report(tmp_path)
    with pytest.raises(ReportGenerationError, match="no report at"):
        load_report(tmp_path / "elsewhere.json")


def test_every_segment_carries_each_stages_stored_row(snapshot: Path, published) -> None:
    store = Warehouse(snapshot)
    report = published.report
    tables = {
        spec.name: {row["segment_id"]: row for row in store.read_partition(spec, DAY).to_pylist()}
        for spec in (SEGMENTS, ROBUSTNESS, VIABILITY, ACTIONABILITY, EXPLANATIONS)
    }
    assert [item.segment_id for item in report.segments] == sorted(tables["segments"])
    for item in report.segments:
        sid = item.segment_id
        assert item.segment == Segment(**tables["segments"][sid])
        assert item.robustness == RobustnessScore(**tables["robustness"][sid])
        assert item.viability == SegmentViability(**tables["viability"][sid])
        assert item.actionability == ActionabilityEvaluation(**tables["actionability"][sid])
        assert item.explanation == SegmentExplanation(**tables["explanations"][sid])
        assert item.name == tables["segments"][sid]["name"]
        assert item.profile.customers == tables["segments"][sid]["size"]
    viability = tables["viability"].values()
    actionable = {sid for sid, row in tables["actionability"].items() if row["actionable"]}
    targetable = [row for row in viability if row["approved"] and row["segment_id"] in actionable]
    totals = report.totals
    assert totals.segments == len(tables["segments"])
    assert totals.customers == sum(row["size"] for row in tables["segments"].values())
    assert totals.approved == sum(row["approved"] for row in viability)
    assert totals.actionable == len(actionable)
    assert totals.targetable == len(targetable)
    assert totals.targetable_customers == sum(row["size"] for row in targetable)
    assert totals.campaigns == sum(len(row["recommendations"]) for row in tables["explanations"].values())
    assert report.answers.providers == ["mock"]
    assert report.answers.sources == {"mock": 2 * totals.segments}


def test_feature_quartiles_are_those_of_every_member(snapshot: Path, published) -> None:
    store = Warehouse(snapshot)
    with duckdb.connect() as con:
        frame = con.execute(
            f"""SELECT c.segment_id, p.* FROM read_parquet('{store.partition_path(CLUSTERS, DAY)}') c
                JOIN read_parquet('{store.partition_path(PROFILES, DAY)}') p USING (canonical_id)"""
        ).df()
    for item in published.report.segments:
        members = frame[frame.segment_id == item.segment_id]
        assert [distribution.feature for distribution in item.features] == list(KEY_FEATURES)
        for distribution in item.features:
            values = members[distribution.feature].dropna().astype(float)
            assert distribution.customers_with_value == len(values)
            if values.empty:
                # Prospects have no order, revenue or CLV: no quartiles, never zeros.
                assert (distribution.median, distribution.p25, distribution.mean) == (None, None, None)
                continue
            assert distribution.median == pytest.approx(values.median(), abs=1e-4)
            assert distribution.p25 == pytest.approx(values.quantile(0.25), abs=1e-4)
            assert distribution.mean == pytest.approx(values.mean(), abs=1e-4)
            assert distribution.population_median == pytest.approx(
                frame[distribution.feature].dropna().astype(float).median(), abs=1e-4
            )


def test_coverage_counts_the_window_and_what_is_missing_from_it(store: Warehouse) -> None:
    coverage = gather_report(store, DAY, SETTINGS).report.coverage
    assert coverage.window_last_day == DAY
    first = coverage.window_first_day
    assert coverage.window_days == coverage.possible_days == (DAY - first).days + 1
    stored = store.partition_days(RAW_EVENTS, first, DAY)
    # The synthetic history starts on 2025-06-01, inside the window: without the first partition's
    # day, the days before it count as missing.
    assert stored[0] == date(2025, 6, 1)
    assert coverage.days_with_events == len(stored)
    assert coverage.missing_days == (DAY - first).days + 1 - len(stored)
    assert coverage.as_of_day_has_events and coverage.days_changed_since_profiles == []
    with duckdb.connect() as con:
        (events,) = con.execute(
            f"SELECT count(*) FROM read_parquet('{store.table_dir(RAW_EVENTS)}/date=*/*.parquet', hive_partitioning=true)"
            f" WHERE date BETWEEN DATE '{first}' AND DATE '{DAY}'"
        ).fetchone()
    assert coverage.events_in_window == events
    assert coverage.customers_profiled == coverage.customers_segmented > 0
    assert coverage.features_without_values == []

    # Only days that could have data count: from the first partition on, every day has events.
    from_start = gather_report(store, DAY, SETTINGS, first_partition_day=date(2025, 6, 1)).report
    assert from_start.coverage.possible_days == len(stored) == from_start.coverage.days_with_events
    assert from_start.coverage.missing_days == 0 and from_start.coverage.coverage == 1.0
    assert f"Data: {len(stored)} of {len(stored)} days with events" in markdown(from_start)
    assert f"the window's first {(date(2025, 6, 1) - first).days} days lie before the data's first day" in markdown(
        from_start
    )

    # A run of a day stopped between its quarantine and its events: named, nothing counted.
    missing = date(2025, 9, 15)
    shutil.rmtree(store.partition_path(RAW_EVENTS, missing).parent)
    with pytest.raises(DataIntegrityError, match="2025-09-15: quarantine_raw_events is stored but raw_events is not"):
        gather_report(store, DAY, SETTINGS)


def rebuild_profiles(store: Warehouse) -> None:
    """The profiles of DAY built again over what is stored now, as the profiles asset stores them.

    The segments' purchase rhythm is read from the profiles, so the stored answers are re-stamped as
    answers made from the new ones would be."""
    result = build_profiles(store, DAY)
    store.write_partition(PROFILES, DAY, result.table, result.stored_metadata(ProfileSettings()))
    _answers_follow_the_snapshot(store)


def test_a_stored_day_without_events_is_not_a_day_with_events(store: Warehouse) -> None:
    # A nightly run of a day whose export never came stores an empty partition: no input for that day.
    store.write_partition(RAW_EVENTS, DAY, RAW_EVENTS.empty())
    rebuild_profiles(store)
    published = publish_report(
        gather_report(store, DAY, SETTINGS, first_partition_day=date(2025, 6, 1)), store.report_dir(DAY)
    )
    report = published.report
    stored = store.partition_days(RAW_EVENTS, date(2025, 6, 1), DAY)
    assert report.coverage.days_with_events == len(stored) - 1
    assert report.coverage.missing_days_listed == [DAY]
    assert not report.coverage.as_of_day_has_events
    assert markdown(report).split("\n")[2].startswith(f"**No input for {DAY}: no event of that day was stored")
    assert f"No input for {DAY}" in published.html_path.read_text()


def test_the_report_counts_what_the_profiles_saw_and_names_days_changed_since(store: Warehouse) -> None:
    # A late file: a day of the window is ingested again after the profiles were built.
    late = date(2025, 9, 15)
    before = store.read_partition(RAW_EVENTS, late)
    coverage = gather_report(store, DAY, SETTINGS).report.coverage
    store.write_partition(RAW_EVENTS, late, before.slice(0, before.num_rows // 2))
    again = gather_report(store, DAY, SETTINGS).report
    assert again.coverage.events_in_window == coverage.events_in_window
    assert again.coverage.days_with_events == coverage.days_with_events
    assert again.coverage.days_changed_since_profiles == [late]
    assert f"Events of 1 day changed after these profiles were built ({late})" in markdown(again)
    # The day removed altogether (its events and its quarantine): also a change since the profiles.
    shutil.rmtree(store.partition_path(RAW_EVENTS, late).parent)
    shutil.rmtree(store.partition_path(QUARANTINE_EVENTS, late).parent)
    assert gather_report(store, DAY, SETTINGS).report.coverage.days_changed_since_profiles == [late]
    rebuild_profiles(store)
    rebuilt = gather_report(store, DAY, SETTINGS).report.coverage
    assert rebuilt.days_changed_since_profiles == []
    assert rebuilt.events_in_window == coverage.events_in_window - before.num_rows


def test_answers_made_from_other_statistics_are_refused(store: Warehouse) -> None:
    viability = store.read_partition(VIABILITY, DAY)
    roi = pa.compute.add(viability["expected_roi"], 1.0)
    store.write_partition(
        VIABILITY, DAY, viability.set_column(viability.schema.get_field_index("expected_roi"), "expected_roi", roi)
    )
    with pytest.raises(ReportGenerationError, match=r"actionability of 2025-12-31 does not match the stored snapshot"):
        gather_report(store, DAY, SETTINGS)


def test_a_missing_stage_is_named(store: Warehouse) -> None:
    store.partition_path(EXPLANATIONS, DAY).unlink()
    with pytest.raises(PipelineError, match="explanations for 2025-12-31 is not materialized"):
        gather_report(store, DAY, SETTINGS)


def test_the_chart_sample_is_bounded_and_the_same_on_every_run(store: Warehouse) -> None:
    first = gather_report(store, DAY, SETTINGS, sample_per_segment=40).feature_sample
    again = gather_report(store, DAY, SETTINGS, sample_per_segment=40).feature_sample
    assert first.groupby("segment_id").size().max() == 40
    pd.testing.assert_frame_equal(first, again)


def test_the_png_files_are_real_images_of_sensible_size(published) -> None:
    # A first snapshot has no migration to draw; every other chart is there, in the report's order.
    assert [chart.name for chart in published.report.charts] == FIRST_SNAPSHOT_CHARTS
    for chart in published.report.charts:
        path = published.folder / chart.file
        with Image.open(path) as picture:
            picture.load()
            assert picture.format == "PNG"
            assert picture.size == (chart.width_px, chart.height_px)
            assert 600 <= picture.width <= 2400 and 400 <= picture.height <= 2400, (chart.name, picture.size)
            colours = picture.convert("RGB").getcolors(maxcolors=1_000_000)
        # A real chart has bars, text and shading: many colours, not a blank canvas.
        assert len(colours) > 200, chart.name
        assert 10_000 < path.stat().st_size < 1_000_000


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.sections: set[str] = set()
        self.external: list[str] = []
        #: Links a reader may follow (the audience files, the PDF): not needed to show the page.
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "img":
            self.images.append(attributes)
        if tag == "section":
            self.sections.add(attributes.get("id", ""))
        for key in ("src", "href"):
            value = attributes.get(key, "")
            if value and not (value.startswith("data:") or value.startswith("#")):
                (self.links if tag == "a" else self.external).append(value)


def test_the_page_stands_alone_names_every_segment_and_embeds_every_chart(published) -> None:
    import base64

    page = _Page()
    text = published.html_path.read_text(encoding="utf-8")
    page.feed(text)
    assert page.external == []  # no file, script or stylesheet the page needs beside it
    # Links lead to the printable summary and each exported campaign's audience file, and resolve as a browser
    # resolves them (by the page's address: the day's folder is a link to its current version).
    audiences = [item.audience_file for item in published.report.campaigns]
    assert sorted(page.links) == sorted(["summary.pdf", *audiences])
    assert audiences and all(audiences)
    for link in page.links:
        assert Path(os.path.normpath(published.folder / link)).is_file(), link
    assert page.sections == {item.segment_id for item in published.report.segments}
    for item in published.report.segments:
        assert item.name in text
        assert item.explanation.executive_summary.replace("&", "&amp;")[:60] in text
    sources = [image["src"] for image in page.images]
    assert len(sources) == len(published.report.charts)
    for chart in published.report.charts:
        encoded = "data:image/png;base64," + base64.b64encode((published.folder / chart.file).read_bytes()).decode()
        assert encoded in sources, chart.file
    assert all(image["alt"] for image in page.images)


def test_the_markdown_summary_has_a_row_and_a_paragraph_per_segment(published) -> None:
    text = published.markdown_path.read_text(encoding="utf-8")
    assert text.startswith(f"# Campaign brief: customer segments as of {DAY}\n")
    segments = text.split("\n## Segments\n")[1].split("\n## ")[0]
    rows = [line for line in segments.splitlines() if re.match(r"^\| S\d+ ", line)]
    assert len(rows) == published.report.totals.segments
    for item, row in zip(published.report.segments, rows):
        assert row.startswith(f"| {item.segment_id} {item.name} | {item.segment.size:,} |")
        assert f"**{item.segment_id} {item.name}**" in text
    assert "This is the first snapshot" in text


def test_a_dimension_not_measurable_from_the_data_is_shown_as_such_never_as_zero(published) -> None:
    report = published.report
    first = report.segments[0]
    unmeasured = first.actionability.model_copy(
        update={
            "what_score": None,
            "what_evidence": "Not measurable from this data: no product categories and no lifecycle stages.",
        }
    )
    changed = report.model_copy(
        update={"segments": [first.model_copy(update={"actionability": unmeasured}), *report.segments[1:]]}
    )
    scores = unmeasured
    assert (
        f"- Actionability: WHAT not measurable from this data, WHEN {scores.when_score:.2f}, "
        f"HOW {scores.how_score:.2f}, WHO {scores.who_score:.2f}"
    ) in markdown(changed)
    assert markdown(report).count("- Actionability: WHAT ") == len(report.segments)
    page = render_html(changed, published.folder)
    assert "<tr><td>What to offer</td><td class=num>not measurable from this data</td>" in page
    # The purchase rhythm, which times a campaign on data without times of day, is on the page too.
    rhythm = next(
        item.profile.rhythm
        for item in report.segments
        if item.profile.rhythm and item.profile.rhythm.median_days_between_purchases is not None
    )
    assert (
        f"<div><span>Purchase rhythm</span>{rhythm.repeat_buyer_share:.1%} repeat buyers, every "
        f"{rhythm.median_days_between_purchases} days, last purchase {rhythm.median_days_since_purchase} days ago "
        "(medians)</div>"
    ) in page
    # The heatmap: a grey hatched n/a cell for WHAT of the first segment, every other cell on the colour scale.
    heatmap = charts.actionability_heatmap(changed).figure.axes[0]
    hatched = [patch for patch in heatmap.patches if patch.get_hatch()]
    assert [(patch.get_x(), patch.get_y(), patch.get_hatch()) for patch in hatched] == [(0, 0, charts.NO_SCORE_HATCH)]
    assert [text.get_text() for text in heatmap.texts if text.get_position() == (0.5, 0.5)] == ["n/a"]
    assert not any(patch.get_hatch() for patch in charts.actionability_heatmap(report).figure.axes[0].patches)


def test_publishing_again_replaces_the_folder_with_identical_files(store: Warehouse) -> None:
    folder = store.report_dir(DAY)
    first = publish_report(gather_report(store, DAY, SETTINGS), folder)
    contents = {path.name: path.read_bytes() for path in folder.iterdir()}
    (folder / "stale_chart.png").write_bytes(b"left by an older run")
    second = publish_report(gather_report(store, DAY, SETTINGS), folder)
    assert second.report == first.report
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == contents
    # The day's link and one version behind it (beside the day's lock file): the replaced one and a
    # killed run's leftovers are gone.
    assert folder.is_symlink()
    assert sorted(path.name for path in folder.parent.iterdir()) == [".versions", folder.name]
    assert sorted(path.name for path in (folder.parent / ".versions").iterdir()) == [
        f".{folder.name}.lock",
        folder.resolve().name,
    ]


def _publish_when_told(draft, folder: Path, go, published) -> None:
    go.wait()
    publish_report(draft, folder)
    published.put(folder.resolve().name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the two publishers are forked processes")
def test_two_runs_publishing_the_same_day_at_once_both_finish_and_the_last_wins(store: Warehouse) -> None:
    """Two processes publish the report of one day at the same moment, a few times over: neither
    fails, and the day's link is left on the version of the one that published last, the only
    version kept."""
    draft = _draft(store)
    folder = store.report_dir(DAY)
    segments = {item.segment_id: item.name for item in draft.report.segments}
    context = multiprocessing.get_context("fork")
    for _ in range(3):
        go, published = context.Event(), context.Queue()
        publishers = [context.Process(target=_publish_when_told, args=(draft, folder, go, published)) for _ in "ab"]
        for publisher in publishers:
            publisher.start()
        go.set()
        for publisher in publishers:
            publisher.join(timeout=300)
        assert [publisher.exitcode for publisher in publishers] == [0, 0]
        # What each saw the link point to right after its publication: the one seen last is kept.
        first_seen, last_seen = published.get(timeout=5), published.get(timeout=5)
        assert first_seen != last_seen
        assert folder.resolve().name == last_seen
        assert [path.name for path in (folder.parent / ".versions").glob("date=*")] == [last_seen]
        assert verify_report(folder, DAY, segments) == []


def test_verify_report_names_what_is_wrong(store: Warehouse) -> None:
    published = publish_report(gather_report(store, DAY, SETTINGS), store.report_dir(DAY))
    segments = {item.segment_id: item.name for item in published.report.segments}
    assert verify_report(published.folder, DAY, segments) == []
    assert verify_report(published.folder, DAY - timedelta(days=1), segments) == [
        f"report.json is the report of {DAY}, not of {DAY - timedelta(days=1)}"
    ]
    published.chart_path("clv_by_segment").unlink()
    page = published.html_path.read_text()
    published.html_path.write_text(page.replace(published.report.segments[0].name, "someone else"))
    extra = dict(segments, S99="A segment the report does not have")
    problems = verify_report(published.folder, DAY, extra)
    assert f"report.json lists segments {sorted(segments)}, the snapshot has {sorted(extra)}" in problems
    assert "chart clv_by_segment.png is missing" in problems
    first = published.report.segments[0]
    assert f"report.html has no section for {first.segment_id} {first.name}" in problems
    assert "report.md does not name S99 A segment the report does not have" in problems
    with Image.open(published.chart_path("segment_sizes")) as picture:
        picture.convert("L").save(published.chart_path("segment_sizes"))  # same size, other pixels
    assert "report.html does not embed segment_sizes.png" in verify_report(published.folder, DAY, segments)


def test_segment_migration_counts_and_chart() -> None:
    moves = pa.table(
        {
            "previous_as_of": pa.array([date(2025, 12, 30)] * 5, pa.date32()),
            "from_segment_id": ["S01", "S01", None, "S02", "S02"],
            "to_segment_id": ["S01", "S02", "S02", None, "S02"],
            "customers": pa.array([10, 3, 4, 2, 7], pa.int64()),
        }
    )
    migration = _migration(moves)
    assert migration == Migration(
        previous_as_of=date(2025, 12, 30),
        moves=[
            SegmentMove(
                from_segment_id=row["from_segment_id"], to_segment_id=row["to_segment_id"], customers=row["customers"]
            )
            for row in moves.to_pylist()
        ],
        stayed=17,
        moved=3,
        arrived=4,
        left=2,
    )
    assert _migration(pa.Table.from_pylist([], SEGMENT_MIGRATION.schema)).previous_as_of is None


def test_migration_since_the_previous_snapshot_is_drawn(published) -> None:
    report = published.report
    first, second = report.segments[0].segment_id, report.segments[1].segment_id
    moved = report.model_copy(
        update={
            "migration": Migration(
                previous_as_of=DAY - timedelta(days=1),
                moves=[
                    SegmentMove(from_segment_id=first, to_segment_id=first, customers=100),
                    SegmentMove(from_segment_id=first, to_segment_id=second, customers=5),
                    SegmentMove(from_segment_id=None, to_segment_id=second, customers=7),
                    SegmentMove(from_segment_id="S42", to_segment_id=None, customers=3),
                ],
                stayed=100,
                moved=5,
                arrived=7,
                left=3,
            )
        }
    )
    chart = charts.migration_heatmap(moved)
    assert chart is not None and chart.name == "segment_migration"
    axes = chart.figure.axes[0]
    assert [tick.get_text().split()[0] for tick in axes.get_yticklabels()] == [first, "S42", "new"]
    assert [tick.get_text().split("\n")[0].split()[0] for tick in axes.get_xticklabels()] == [first, second, "left"]
    assert "100 stayed, 5 moved, 7 arrived, 3 left" in chart.figure.get_suptitle()
    assert charts.migration_heatmap(report) is None


def test_a_segment_keeps_its_colour_and_segments_differ() -> None:
    colours = [charts.segment_colour(f"S{number:02d}") for number in range(1, 21)]
    assert len(set(colours)) == 20
    assert charts.segment_colour("S03") == colours[2]
    assert charts.segment_colour("S23") == colours[2]  # the palette repeats after 20


def test_the_k_selection_chart_marks_the_chosen_k() -> None:
    candidates = pd.DataFrame(
        {
            "k": [3, 4, 5],
            "inertia": [90.0, 60.0, 50.0],
            "silhouette": [0.3, 0.5, 0.4],
            "calinski_harabasz": [100.0, 150.0, 120.0],
            "davies_bouldin": [1.2, 0.8, 1.0],
            "score": [0.1, 0.9, 0.5],
        }
    )
    chart = charts.k_selection(candidates, 4, 4, "rule")
    inertia, criteria = chart.figure.axes[:2]
    assert list(criteria.lines[0].get_ydata()) == pytest.approx([0.0, 1.0, 0.5])  # silhouette scaled
    assert list(criteria.lines[2].get_ydata()) == pytest.approx([0.0, 1.0, 0.5])  # Davies-Bouldin inverted
    assert "k = 4" in chart.figure.get_suptitle()
    assert chart.png()[:8] == b"\x89PNG\r\n\x1a\n"
    renderer = FigureCanvasAgg(chart.figure).get_renderer()
    # The legends sit below their axes, not over the lines.
    for ax in (inertia, criteria):
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent(renderer).y1 < ax.get_window_extent(renderer).y0
    # Every text of the chart lies inside the picture (none clipped at an edge).
    picture = chart.figure.bbox
    for text in [*chart.figure.texts, *(t for ax in chart.figure.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label))]:
        box = text.get_window_extent(renderer)
        assert picture.x0 <= box.x0 and box.x1 <= picture.x1 and picture.y0 <= box.y0 and box.y1 <= picture.y1, text


def test_a_k_fixed_by_the_user_is_shown_as_such_with_its_separation() -> None:
    candidates = pd.DataFrame(
        {
            "k": [6],
            "inertia": [5663.8],
            "silhouette": [0.47],
            "calinski_harabasz": [2763.4],
            "davies_bouldin": [1.09],
            "score": [float("nan")],
        }
    )
    chart = charts.k_selection(candidates, 6, None, "n_clusters set in config", fixed=True)
    assert chart.figure.get_suptitle() == (
        "k = 6 segments, fixed by the user (n_clusters in the run's config): no other k was tried"
    )
    (ax,) = chart.figure.axes
    (marker,) = [line for line in ax.lines if list(line.get_xdata()) == [0.47, 0.47]]
    assert marker is not None
    assert "Davies-Bouldin 1.09" in ax.get_xlabel() and "Calinski-Harabasz 2,763" in ax.get_xlabel()
    assert "weak structure" in [text.get_text() for text in ax.texts]  # 0.47 lies in the weak band
    assert "nan" not in (chart.description + ax.get_xlabel()).lower()


def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


#: Marks every image on the page once it has loaded, for the test to read from the DOM.
_IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter((image) => !(image.complete && image.naturalWidth > 0));
  document.body.dataset.images = images.length;
  document.body.dataset.broken = broken.map((image) => image.alt.split(":")[0]).join("|");
  document.body.dataset.firstImageWidth = images.length ? images[0].naturalWidth : 0;
  const campaigns = document.querySelector("table.campaigns");
  const rows = campaigns ? campaigns.querySelectorAll("tr") : [];
  document.body.dataset.campaignsTop = campaigns ? Math.round(campaigns.getBoundingClientRect().top) : -1;
  document.body.dataset.campaignsFirstRowBottom = rows.length > 1 ? Math.round(rows[1].getBoundingClientRect().bottom) : -1;
  document.body.dataset.campaignRows = Math.max(rows.length - 1, 0);
});
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium_without_broken_images(published, tmp_path: Path) -> None:
    browser = _chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(published.html_path.read_text(encoding="utf-8").replace("</body>", _IMAGE_PROBE + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [browser, *flags, "--window-size=1280,1400", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    assert attributes["images"] == str(len(published.report.charts))
    assert attributes["broken"] == ""
    # The first screen (1280 x 1400) shows the brief: the campaigns table begins on it with its first campaign.
    assert attributes["campaign-rows"] == str(len(published.report.campaigns))
    assert 0 < int(attributes["campaigns-top"]) < int(attributes["campaigns-first-row-bottom"]) <= 1400
    screenshot = tmp_path / "page.png"
    shot = subprocess.run(
        [browser, *flags, "--window-size=1280,1400", f"--screenshot={screenshot}", published.html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    with Image.open(screenshot) as picture:
        assert picture.size == (1280, 1400)
        rgb = picture.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000)
        # Not a blank page: text and table lines cover a good part of it (a blank one is all background).
        pixels = np.asarray(rgb).reshape(-1, 3).astype(int)
    background = max(colours)[1]
    covered = float((np.abs(pixels - np.asarray(background)).sum(axis=1) > 60).mean())
    assert covered > 0.03
    assert len(colours) > 100
    # The screenshot stays beside the test's files (pytest keeps the last runs' tmp folders) to look at.
    assert screenshot.stat().st_size > 20_000


def _answers_follow_the_snapshot(store: Warehouse) -> None:
    """Re-stamp the stored answers with the snapshot's current fingerprints, as answers made from it would be."""
    fingerprints = {item.segment_id: item.sha256 for item in stored_snapshot_facts(store, DAY)}
    for spec in (ACTIONABILITY, EXPLANATIONS):
        table = store.read_partition(spec, DAY)
        stamped = pa.array([fingerprints[segment_id] for segment_id in table["segment_id"].to_pylist()])
        store.write_partition(
            spec, DAY, table.set_column(table.schema.get_field_index("statistics_sha256"), "statistics_sha256", stamped)
        )


def _rewrite(store: Warehouse, spec, segment_id: str, **values: object) -> None:
    rows = store.read_partition(spec, DAY).to_pylist()
    for row in rows:
        if row["segment_id"] == segment_id:
            row.update(values)
    store.write_partition(spec, DAY, pa.Table.from_pylist(rows, spec.schema))


AWKWARD_NAME = 'Spend $50-$100 <img src=x onerror="alert(1)"> & *bold* | piped\nshoppers'


def test_names_from_the_data_are_shown_as_written_everywhere(store: Warehouse) -> None:
    first = store.read_partition(SEGMENTS, DAY)["segment_id"][0].as_py()
    _rewrite(store, SEGMENTS, first, name=AWKWARD_NAME)
    _answers_follow_the_snapshot(store)
    published = publish_report(gather_report(store, DAY, SETTINGS), store.report_dir(DAY))
    assert published.report.segment(first).name == AWKWARD_NAME
    page = published.html_path.read_text()
    assert "<img src=x" not in page and 'onerror="alert(1)"' not in page
    assert html.escape(AWKWARD_NAME) in page
    summary = published.markdown_path.read_text()
    assert 'Spend $50-$100 \\<img src=x onerror="alert(1)"\\> & \\*bold\\* \\| piped shoppers' in summary
    table_row = next(line for line in summary.splitlines() if line.startswith(f"| {first} "))
    assert table_row.count(" | ") == 7  # the name's '|' does not open a column
    # matplotlib drew the dollars as dollars: the label carries them escaped from its mathtext.
    sizes = charts.segment_sizes(published.report).figure.axes[0]
    assert any(r"\$50-\$100" in tick.get_text() for tick in sizes.get_yticklabels())
    assert (
        verify_report(published.folder, DAY, {item.segment_id: item.name for item in published.report.segments}) == []
    )


def test_an_unmeasured_segment_is_reported_as_such(store: Warehouse) -> None:
    first = store.read_partition(SEGMENTS, DAY)["segment_id"][0].as_py()
    _rewrite(
        store,
        ROBUSTNESS,
        first,
        overall=None,
        feature_drop_stability=None,
        time_window_stability=None,
        bootstrap_stability=None,
        band="unmeasured",
        production_ready=False,
    )
    _answers_follow_the_snapshot(store)
    published = publish_report(gather_report(store, DAY, SETTINGS), store.report_dir(DAY))
    assert published.report.segment(first).robustness.overall is None
    assert load_report(published.folder) == published.report
    row = next(line for line in published.markdown_path.read_text().splitlines() if line.startswith(f"| {first} "))
    assert "| unmeasured (no test could be run) |" in row
    heatmap = charts.robustness_heatmap(published.report).figure.axes[0]
    unmeasured = [text.get_text() for text in heatmap.texts if text.get_position()[1] == 0.5]  # the first row
    assert unmeasured == ["n/a", "n/a", "n/a", "n/a\nunmeasured"]
    assert sum(text.get_text().startswith("n/a") for text in heatmap.texts) == 4


def test_a_value_that_is_not_a_number_is_named_instead_of_written(store: Warehouse) -> None:
    first = store.read_partition(SEGMENTS, DAY)["segment_id"][0].as_py()
    _rewrite(store, SEGMENTS, first, mean_clv=float("nan"))
    _answers_follow_the_snapshot(store)
    with pytest.raises(
        ReportGenerationError,
        match=r"values that are not numbers: segments\.0\.profile\.mean_clv, segments\.0\.segment\.mean_clv$",
    ):
        gather_report(store, DAY, SETTINGS)


def test_a_stored_row_out_of_its_range_is_named(store: Warehouse) -> None:
    first = store.read_partition(SEGMENTS, DAY)["segment_id"][0].as_py()
    _rewrite(store, ROBUSTNESS, first, bootstrap_stability=1.5)
    _answers_follow_the_snapshot(store)
    with pytest.raises(
        ReportGenerationError,
        match=rf"(?s)the stored rows of {first} for 2025-12-31 are not valid:.*RobustnessScore.*bootstrap_stability",
    ):
        gather_report(store, DAY, SETTINGS)


def test_a_snapshot_without_segments_has_nothing_to_report(store: Warehouse) -> None:
    for spec in (SEGMENTS, ROBUSTNESS, VIABILITY, ACTIONABILITY, EXPLANATIONS):
        store.write_partition(spec, DAY, spec.empty())
    with pytest.raises(ReportGenerationError, match="the snapshot of 2025-12-31 has no segments: nothing to report"):
        gather_report(store, DAY, SETTINGS)


def test_retired_segments_keep_their_names_in_the_migration_chart(store: Warehouse, published) -> None:
    previous = DAY - timedelta(days=1)
    store.write_partition(
        SEGMENTS,
        previous,
        store.read_partition(SEGMENTS, DAY).set_column(
            1, "name", pa.array([f"Earlier segment {index}" for index in range(published.report.totals.segments)])
        ),
    )
    moves = pa.table(
        {
            "previous_as_of": pa.array([previous] * 2, pa.date32()),
            "from_segment_id": ["S01", "S01"],
            "to_segment_id": ["S01", None],
            "customers": pa.array([5, 2], pa.int64()),
        }
    )
    migration = _migration(moves, store)
    assert migration.previous_names["S01"] == "Earlier segment 0"
    chart = charts.migration_heatmap(published.report.model_copy(update={"migration": migration}))
    labels = [tick.get_text().replace("\n", " ") for tick in chart.figure.axes[0].get_yticklabels()]
    # The current name wins for a segment that still exists.
    assert labels == [charts.segment_label("S01", published.report.segment("S01").name, 22).replace("\n", " ")]
    retired = _migration(moves.set_column(1, "from_segment_id", pa.array(["S09", "S09"])), store)
    assert retired.previous_names.get("S09") is None or retired.previous_names["S09"].startswith("Earlier")


def test_a_report_written_with_stage_run_ids_still_loads() -> None:
    """Reports made before run IDs moved to Dagster's metadata named the run of each stage."""
    legacy = {"stage": "clusters", "run_id": "0e30dd7d", "given": {"n_clusters": 6}, "config": {}}
    assert StageSettings.model_validate(legacy) == StageSettings(
        stage="clusters", recorded=True, given={"n_clusters": 6}
    )
    unrecorded = {"stage": "clusters", "run_id": None}
    assert StageSettings.model_validate(unrecorded) == StageSettings(stage="clusters", recorded=False)


# ------------------------------------------------------------------ the chart process

#: The second chart process is a fork: Linux only (the number of cores only changes the speed).
needs_fork = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods(),
    reason="the charts are drawn in one process where processes cannot be forked safely",
)


def _draft(store: Warehouse):
    return gather_report(store, DAY, SETTINGS)


@pytest.fixture
def serial_charts(store: Warehouse, tmp_path_factory: pytest.TempPathFactory):
    """The charts drawn in one process, with their files' bytes."""
    draft = _draft(store)
    folder = tmp_path_factory.mktemp("alone")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(charts, "_can_fork_a_second_process", lambda: False)
        drawn = charts.save_charts(draft.report, draft.feature_sample, folder)
    return drawn, {chart.name: (folder / chart.file).read_bytes() for chart in drawn}


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list:
    """Forking allowed whatever the number of cores; the chart processes started, recorded."""
    monkeypatch.setattr(charts, "_can_fork_a_second_process", lambda: True)
    children = []
    real_process = multiprocessing.get_context("fork").Process

    class RecordedProcess(real_process):
        def start(self) -> None:
            super().start()
            children.append(self)

    monkeypatch.setattr(multiprocessing.get_context("fork"), "Process", RecordedProcess)
    return children


def _same_charts(drawn, folder: Path, serial_charts) -> None:
    expected, files = serial_charts
    assert drawn == expected
    assert [chart.name for chart in drawn] == FIRST_SNAPSHOT_CHARTS
    for chart in drawn:
        assert (folder / chart.file).read_bytes() == files[chart.name], chart.name


@needs_fork
def test_a_forked_process_draws_half_the_charts_and_the_files_are_the_same(
    store: Warehouse, tmp_path: Path, forked: list, serial_charts
) -> None:
    draft = _draft(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback taken
        drawn = charts.save_charts(draft.report, draft.feature_sample, tmp_path)
    assert len(forked) == 1 and forked[0].exitcode == 0
    _same_charts(drawn, tmp_path, serial_charts)
    assert set(charts.SECOND_PROCESS) < set(charts._MAKERS)
    assert charts.gc.isenabled()


def _in_the_chart_process() -> bool:
    return multiprocessing.current_process().name == "report-charts"


def _dying_dashboard(report, sample):
    if _in_the_chart_process():
        os._exit(3)
    return charts.dashboard(report)


def _slow_dashboard(report, sample):
    if _in_the_chart_process():
        time.sleep(60)
    return charts.dashboard(report)


@needs_fork
@pytest.mark.parametrize(
    ("maker", "message"),
    [
        (_dying_dashboard, r"ended without an answer \(exit code 3\); drawing dashboard, .* here"),
        (_slow_dashboard, r"did not answer in 1 s and was stopped; drawing dashboard, .* here"),
    ],
)
def test_a_chart_process_that_dies_or_hangs_is_stopped_and_its_charts_drawn_here(
    store: Warehouse, tmp_path: Path, forked: list, serial_charts, monkeypatch: pytest.MonkeyPatch, maker, message
) -> None:
    draft = _draft(store)
    monkeypatch.setitem(charts._MAKERS, "dashboard", maker)
    monkeypatch.setattr(charts, "CHART_PROCESS_TIMEOUT_SECONDS", 1)
    started = time.monotonic()
    with pytest.warns(UserWarning, match=message):
        drawn = charts.save_charts(draft.report, draft.feature_sample, tmp_path)
    assert time.monotonic() - started < 30  # a hung process is not waited for beyond its timeout
    _same_charts(drawn, tmp_path, serial_charts)
    assert len(forked) == 1 and not forked[0].is_alive()
    assert charts.gc.isenabled()


@needs_fork
def test_a_chart_that_fails_fails_the_report_with_its_own_error(
    store: Warehouse, tmp_path: Path, forked: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_dashboard(report, sample):
        raise ValueError("no ink left")

    draft = _draft(store)
    monkeypatch.setitem(charts._MAKERS, "dashboard", failing_dashboard)
    with pytest.warns(UserWarning, match=r"(?s)the chart process failed:.*ValueError: no ink left"):
        with pytest.raises(ValueError, match="no ink left"):
            charts.save_charts(draft.report, draft.feature_sample, tmp_path)
    assert len(forked) == 1 and not forked[0].is_alive()
    assert charts.gc.isenabled()


@needs_fork
def test_a_fork_that_cannot_start_leaves_every_chart_to_this_process(
    store: Warehouse, tmp_path: Path, forked: list, serial_charts, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(self) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", no_memory)
    draft = _draft(store)
    with pytest.warns(UserWarning, match="could not start .*Cannot allocate memory"):
        drawn = charts.save_charts(draft.report, draft.feature_sample, tmp_path)
    _same_charts(drawn, tmp_path, serial_charts)


def test_the_report_says_what_clv_means_and_how_the_models_did(published) -> None:
    report = published.report
    value = report.customer_value
    backtest = Warehouse(published.json_path.parent.parent.parent).read_partition(CLV_BACKTEST, DAY).to_pylist()
    (chosen,) = [row for row in backtest if row["chosen"]]
    assert value.model == chosen["name"] and value.horizon_days == 365 and value.annual_discount_rate == 0.10
    assert [row.name for row in value.backtest] == [row["name"] for row in backtest]
    assert {row.kind for row in value.backtest} == {"model", "baseline"}
    assert value.backtest_reason == chosen["reason"]
    text = published.markdown_path.read_text()
    assert (
        "Customer value (CLV) is each customer's expected spend over the next 365 days in today's money "
        "(USD, 10% a year discount)"
    ) in text
    assert "## How well the churn and CLV models forecast" in text
    assert "| Days since the last purchase (rule of thumb) |" in text
    for item in report.segments:
        mix = item.segment.lifecycle_mix
        assert mix and sum(mix.values()) == pytest.approx(1.0)
        largest = max(mix, key=mix.get).replace("_", " ")
        assert f"lifecycle: {largest} {mix[max(mix, key=mix.get)] * 100:.1f}%" in text
    assert "How well the churn and CLV models forecast" in published.html_path.read_text()
    # The tracking and calibration charts draw what the backtest stored: every model, every day, 0 .. 7+.
    assert [row["frequency"] for row in value.calibration] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert value.tracking[-1]["day"] == str(DAY) and value.tracking[-1]["actual"] > 0
    models = [row.name for row in value.backtest if row.kind == "model"]
    assert all(value.tracking[-1][name] > 0 for name in models)
    charts = {chart.name: chart for chart in report.charts}
    assert f"bought by {value.backtest_split_day}" in charts["clv_tracking"].description
    page = published.html_path.read_text()
    assert "Model tracking" in page and "Model calibration" in page


def test_the_report_says_what_was_exported_and_what_was_kept_back(snapshot: Path, published) -> None:
    """The audience export of the day as the audience_exports table stored it, on the page and in the summary."""
    stored = Warehouse(snapshot).read_partition(AUDIENCE_EXPORTS, DAY).to_pylist()
    assert stored, "the snapshot exported no campaign: the test needs one"
    report = published.report
    assert [(item.campaign_key, item.customers, item.control_customers) for item in report.exports] == [
        (row["campaign_key"], row["customers"], row["control_customers"]) for row in stored
    ]
    contacted = sum(row["customers"] for row in stored)
    kept = sum(row["control_customers"] for row in stored)
    line = exports_line(report)
    assert line.startswith(f"{len(stored)} campaigns exported with {contacted:,} customers to contact; {kept:,}")
    page = published.html_path.read_text()
    assert "<h3>Audiences exported</h3>" in page and escape(line) in page
    for row in stored:
        assert f"<td>{escape(row['campaign_key'])}</td><td class=num>{row['customers']:,}</td>" in page
    assert "### Audiences exported" in published.markdown_path.read_text()


# ---------------------------------------------------------------- the campaign brief


def _visible_text(page: str) -> str:
    """What a reader sees: no tags, no embedded images, no settings JSON."""
    page = re.sub(r"<pre>.*?</pre>", " ", page, flags=re.DOTALL)
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    page = re.sub(r'src="data:[^"]*"', " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_brief_opens_with_the_campaigns_to_launch_and_ends_with_the_evidence(snapshot: Path, published) -> None:
    """Every exported campaign of a segment viability approved and actionability judged actionable is a row,
    with its customers, money and audience file; the page runs brief, changes, segments, evidence."""
    report = published.report
    stored = {row["campaign_key"]: row for row in Warehouse(snapshot).read_partition(AUDIENCE_EXPORTS, DAY).to_pylist()}
    assert report.campaigns, "the snapshot has no campaign: the test needs one"
    assert {item.campaign_key for item in report.campaigns} == {key for key, row in stored.items() if row["customers"]}
    for brief in report.campaigns:
        segment = report.segment(brief.segment_id)
        assert segment.viability.approved and segment.actionability.actionable
        customers = stored[brief.campaign_key]["customers"]
        assert brief.exported_customers == customers
        size = segment.segment.size
        assert brief.expected_value == round(segment.viability.incremental_profit / size * customers, 2)
        assert brief.cost == round(segment.viability.campaign_cost / size * customers, 2)
        assert (
            Path(os.path.normpath(published.folder / brief.audience_file))
            == Path(stored[brief.campaign_key]["folder"]) / "audience.csv"
        )
        # The channel is one the segment over-indexes on, or the owned channel (email by default).
        lifts = {label.label: label.lift for label in segment.profile.channels}
        assert brief.channel == "email" or (lifts[brief.channel] or 0) > 1, (brief.campaign_key, lifts)
    assert [item.expected_value for item in report.campaigns] == sorted(
        (item.expected_value for item in report.campaigns), reverse=True
    )
    page = published.html_path.read_text(encoding="utf-8")
    order = [
        page.index('id="campaigns"'),
        page.index('id="changes"'),
        page.index('id="segments"'),
        page.index('id="evidence"'),
        page.index("Answers by"),
    ]
    assert order == sorted(order)
    # Who answered and with which prompt belongs to the evidence, never to the top of the page.
    assert page.index("prompt ") > page.index('id="evidence"')
    first = report.campaigns[0]
    assert f'<a href="{first.audience_file}">{first.campaign_key}</a>' in page
    assert f"<td class=num>${first.expected_value:,.0f}</td><td class=num>${first.cost:,.0f}</td>" in page
    text = published.markdown_path.read_text(encoding="utf-8")
    brief = text.split("## Campaigns to launch\n")[1].split("\n## ")[0]
    assert len([line for line in brief.splitlines() if re.match(r"^\| S\d+ ", line)]) == len(report.campaigns)


def test_no_machine_words_or_long_decimals_on_the_page(published) -> None:
    visible = _visible_text(published.html_path.read_text(encoding="utf-8"))
    summary = published.markdown_path.read_text(encoding="utf-8")
    for text in (visible, summary):
        assert re.findall(r"\d\.\d{3,}", text) == []
        for machine in ("(money)", "strategic tier", "weak: WHO", "recency_days", "monetary_total", "highly_stable"):
            assert machine not in text, machine
    # Money with its currency, returns in words.
    roi = published.report.segments[0].viability.expected_roi
    assert f"${roi + 1:,.2f} per $1 spent" in visible


def test_a_rejected_segment_is_never_shown_as_campaign_ready(published) -> None:
    report = published.report
    rejected = [item for item in report.segments if not item.viability.approved]
    assert rejected, "the snapshot has no rejected segment: the test needs one"
    page = published.html_path.read_text(encoding="utf-8")
    for item in rejected:
        assert not item.actionability.actionable
        assert item.segment_id not in {brief.segment_id for brief in report.campaigns}
        section = page.split(f'id="{item.segment_id}"')[1].split("</section>")[0]
        assert "not worth a campaign now" in section
        assert "a campaign can be aimed" not in section.lower()


def test_stability_and_confidence_follow_the_weakest_test(published) -> None:
    """Bands by the weakest of the three tests: highly stable from 0.85, stable from 0.75, shaky below."""
    for item in published.report.segments:
        tests = [
            score
            for score in (
                item.robustness.time_window_stability,
                item.robustness.feature_drop_stability,
                item.robustness.bootstrap_stability,
            )
            if score is not None
        ]
        weakest = min(tests)
        assert item.weakest_test[1] == weakest
        expected = "highly stable" if weakest >= 0.85 else "stable" if weakest >= 0.75 else "shaky"
        assert item.stability == expected
        ready = item.robustness.production_ready
        confidence = "high" if ready and weakest >= 0.85 else "medium" if weakest >= 0.75 else "low"
        assert item.explanation.confidence_level == confidence


def _segment(segment_id: str, name: str, size: int):
    from types import SimpleNamespace

    return SimpleNamespace(segment_id=segment_id, name=name, segment=SimpleNamespace(size=size))


def test_what_changed_since_the_last_snapshot_is_counted_from_the_moves() -> None:
    """S01 100 -> 150 grew, S02 100 -> 50 shrank, S03 is new, S04 is gone, S05 100 -> 101 held steady."""
    moves = [
        SegmentMove(from_segment_id="S01", to_segment_id="S01", customers=100),
        SegmentMove(from_segment_id="S02", to_segment_id="S02", customers=30),
        SegmentMove(from_segment_id="S02", to_segment_id="S01", customers=50),
        SegmentMove(from_segment_id="S02", to_segment_id="S03", customers=20),
        SegmentMove(from_segment_id="S04", to_segment_id="S02", customers=20),
        SegmentMove(from_segment_id="S04", to_segment_id=None, customers=10),
        SegmentMove(from_segment_id="S05", to_segment_id="S05", customers=100),
        SegmentMove(from_segment_id=None, to_segment_id="S05", customers=1),
        SegmentMove(from_segment_id=None, to_segment_id="S03", customers=5),
    ]
    migration = Migration(
        previous_as_of=DAY - timedelta(days=1),
        moves=moves,
        previous_names={"S01": "One", "S02": "Two", "S04": "Four", "S05": "Five"},
        stayed=230,
        moved=90,
        arrived=6,
        left=10,
    )
    segments = [
        _segment("S01", "One", 150),
        _segment("S02", "Two", 50),
        _segment("S03", "Three", 25),
        _segment("S05", "Five", 101),
    ]
    changes = {
        item.segment_id: (item.previous_customers, item.customers, item.change)
        for item in segment_changes(segments, migration)
    }
    assert changes == {
        "S01": (100, 150, "grew"),
        "S02": (100, 50, "shrank"),
        "S03": (0, 25, "new"),
        "S04": (30, 0, "gone"),
        "S05": (100, 101, "steady"),
    }
    flows = customer_flows(segments, migration)
    assert [(flow.from_segment_id, flow.to_segment_id, flow.customers) for flow in flows] == [
        ("S02", "S01", 50),
        ("S02", "S03", 20),
        ("S04", "S02", 20),
    ]
    assert (flows[2].from_name, flows[2].to_name) == ("Four", "Two")


def test_chart_axes_are_words_with_units(published) -> None:
    report = published.report
    sample = pd.DataFrame(
        {
            "segment_id": [item.segment_id for item in report.segments for _ in range(4)],
            **{name: [1.0, 2.0, 3.0, 4.0] * len(report.segments) for name in charts.DISTRIBUTION_FEATURES},
        }
    )
    boxes = charts.feature_distributions(report, sample).figure
    assert [ax.get_xlabel() for ax in boxes.axes if ax.get_visible()] == [
        "days since last purchase (days)",
        "orders in the window (orders)",
        "net revenue per customer ($)",
        "customer lifetime value ($)",
    ]
    drawn = [maker(report, sample) for maker in charts._MAKERS.values()]
    for chart in (item for item in drawn if item is not None):
        for ax in chart.figure.axes:
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert "_" not in label, (chart.name, label)
    assert "($)" in charts.clv_by_segment(report).figure.axes[0].get_xlabel()


def test_a_segment_mostly_at_zero_is_drawn_not_blank(published) -> None:
    """One segment with 90% of its customers at 0 orders and revenue: a linear axis that includes 0 (a log axis
    has none), its box a thick median line at 0, and a note saying so."""
    report = published.report
    first, second = report.segments[0].segment_id, report.segments[1].segment_id
    zeros = [0.0] * 9 + [5.0]
    spread = [float(value) for value in range(1, 11)]
    sample = pd.DataFrame(
        {
            "segment_id": [first] * 10 + [second] * 10,
            **{name: zeros + spread for name in charts.DISTRIBUTION_FEATURES},
        }
    )
    figure = charts.feature_distributions(report, sample).figure
    orders = figure.axes[1]
    assert orders.get_xscale() == "linear"
    left, right = orders.get_xlim()
    assert left < 0 < right
    notes = [text.get_text() for text in orders.texts]
    assert notes == [" 90% at 0"]
    medians = [line for line in orders.lines if line.get_linewidth() == 2.2]
    assert medians[0].get_xdata().tolist() == [0.0, 0.0]  # the first segment's median, inside the axis
    assert charts.box_statistics(sample, "frequency", [first])[0]["zero_share"] == 0.9


def test_the_printable_summary_is_a_pdf_of_the_brief_and_every_chart(published) -> None:
    data = published.pdf_path.read_bytes()
    assert data[:5] == b"%PDF-"
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert pages == 1 + len(published.report.charts)
    assert b"CreationDate" not in data  # the same report gives the same bytes
    assert (published.folder / "summary.pdf").stat().st_size < 5_000_000


def test_the_migration_chart_labels_a_bounded_number_of_cells() -> None:
    segments = [f"S{index:02d}" for index in range(1, 22)]
    counts = pd.DataFrame(
        [
            [100 if row == column else 1 + (index_r * 7 + index_c) % 5 for index_c, column in enumerate(segments)]
            for index_r, row in enumerate(segments)
        ],
        index=segments,
        columns=segments,
    )
    labelled = charts.migration_labels(counts)
    # 21 who stayed and the 20 largest moves, not 441 labels.
    assert int(labelled.sum()) == 21 + charts.MIGRATION_LABELLED
    assert all(labelled[index, index] for index in range(21))
    small = counts.iloc[:5, :5]
    assert int(charts.migration_labels(small).sum()) == 25


def test_the_report_benchmark_times_every_chart_and_the_pdf(snapshot: Path, tmp_path: Path) -> None:
    """benchmarks/bench_report.py, run small: every chart and the PDF timed, nothing written into the data."""
    out = tmp_path / "report.json"
    before = sorted(str(path.relative_to(snapshot)) for path in snapshot.rglob("*"))
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_report.py", "--data-dir", str(snapshot), "--as-of", str(DAY)]
        + ["--repeats", "1", "--out", str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = __import__("json").loads(out.read_text())
    assert list(record["cpu_seconds"]) == ["gather", *charts._MAKERS, "summary_pdf"]
    charted = {name: value for name, value in record["cpu_seconds"].items() if name in charts._MAKERS}
    assert record["charts_cpu_seconds"] == round(sum(charted.values()), 3)
    assert record["segments"] == len(Warehouse(snapshot).read_partition(SEGMENTS, DAY))
    assert sorted(str(path.relative_to(snapshot)) for path in snapshot.rglob("*")) == before
