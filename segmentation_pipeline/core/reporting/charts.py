"""The report's charts: matplotlib figures drawn headless (no pyplot, no display), with seaborn.

Every chart names segments by their name and ID, never by a number alone, and
gives each segment the same colour in every chart and every snapshot: the
colour follows the segment ID, which stays with a segment from one snapshot to
the next.
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import os
import re
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..clustering import normalised
from ..errors import ReportGenerationError
from ..features import FEATURES_BY_NAME
from ..schemas import ACTIONABILITY_DIMENSIONS
from .document import ChartFile, CustomerValue, SegmentationReport

#: Pixels per inch of the PNG files: sharp on screen, small enough to embed.
DPI = 110
#: 20 distinguishable colours: the strong half of tab20 first, then the light half.
_TAB20 = sns.color_palette("tab20", 20)
PALETTE = _TAB20[0::2] + _TAB20[1::2]
#: Scores are judged on one scale everywhere: red low, green high.
SCORE_COLOURS = "RdYlGn"
#: A cell without a score (not measurable, a test not run): grey and hatched, off the red-green scale.
NO_SCORE_FILL, NO_SCORE_HATCH, NO_SCORE_EDGE = "#ececec", "///", "#bdbdbd"
ROBUSTNESS_TESTS = {
    "time_window_stability": "time window",
    "feature_drop_stability": "feature drop",
    "bootstrap_stability": "bootstrap",
}
#: The heatmap's last column: the weakest test, which gives the segment's stability band and confidence.
WEAKEST_COLUMN = "weakest"
#: Distribution charts draw the four features a marketer reads first.
DISTRIBUTION_FEATURES = ("recency_days", "frequency", "monetary_total", "clv_estimate")
_FEATURE_TITLES = {
    "recency_days": "Days since last purchase",
    "frequency": "Orders in the window",
    "monetary_total": "Net revenue per customer",
    "clv_estimate": "Customer lifetime value",
}
#: The box plots' axes end at this quantile of all sampled customers: one customer far out would otherwise
#: squeeze every box into a sliver (the whiskers of the boxes beyond it are cut at the edge).
AXIS_QUANTILE = 0.98
#: A segment with at least this share of its customers at 0 says so beside its box.
ZERO_NOTE_SHARE = 0.5
#: Migration cells labelled with their count: all when the matrix has at most this many cells; else the
#: diagonal (those who stayed) and the MIGRATION_LABELLED largest moves, so the drawing stays bounded.
MIGRATION_ALL_LABELS = 160
MIGRATION_LABELLED = 20
ACTIONABLE_MARK, NOT_ACTIONABLE_MARK = "\u2713", "\u2717"
sns.set_theme(style="whitegrid", context="notebook")


def segment_colour(segment_id: str) -> tuple[float, float, float]:
    """The colour of a segment: by the number in its ID, so S03 is the same colour in every chart and snapshot."""
    digits = re.findall(r"\d+", segment_id)
    index = int(digits[-1]) - 1 if digits else sum(map(ord, segment_id))
    return PALETTE[index % len(PALETTE)]


def segment_label(segment_id: str, name: str, width: int = 30) -> str:
    """'S03 Weekend sports-focused\\nmobile app shoppers': the ID first, the name wrapped to fit beside a bar."""
    lines = textwrap.wrap(f"{segment_id} {name}", width=width, max_lines=3, placeholder="...")
    return plain_text("\n".join(lines))


def plain_text(text: str) -> str:
    """Text matplotlib draws as written: a '$' would otherwise start mathematical notation."""
    return text.replace("$", r"\$")


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    description: str
    figure: Figure

    def png(self, dpi: int = DPI) -> bytes:
        buffer = io.BytesIO()
        # Fixed metadata: equal charts give equal bytes, so a re-run rewrites identical files.
        self.figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        return buffer.getvalue()

    def save(self, folder: Path) -> ChartFile:
        data = self.png()
        file = f"{self.name}.png"
        (folder / file).write_bytes(data)
        width, height = png_size(data)
        return ChartFile(
            name=self.name, title=self.title, file=file, description=self.description, width_px=width, height_px=height
        )


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ReportGenerationError("a chart was not written as PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def save_charts(report: SegmentationReport, feature_sample: pd.DataFrame, folder: Path) -> list[ChartFile]:
    """Draw every chart of the report into `folder` as PNG files; their records in the report's order
    (the dashboard first; migration only when there is a previous snapshot).

    Matplotlib draws with the GIL held, so threads cannot share the work; on Linux
    with a second core, a forked copy of this process draws about half of the
    charts (`SECOND_PROCESS`) while this one draws the rest: 2.4 -> 1.3 s at
    100,000 customers, the same bytes. Should the fork fail, or the copy die,
    hang or send nothing usable, its charts are drawn here after all (with a
    warning), so the report never depends on the second process. The garbage
    collector is held off meanwhile: matplotlib makes tens of thousands of small
    objects per chart, and each full pass over a Dagster run's heap costs more
    than the drawing it interrupts (about 0.3 s a report); the figures are
    collected afterwards.
    """
    names = list(_MAKERS)
    collecting = gc.isenabled()
    gc.disable()
    try:
        if not _can_fork_a_second_process():
            drawn = _draw(names, report, feature_sample, folder)
        else:
            drawn = _draw_beside([name for name in names if name in SECOND_PROCESS], report, feature_sample, folder)
    finally:
        if collecting:
            gc.enable()
    return [drawn[name] for name in names if drawn.get(name) is not None]


#: Every chart by name, in the report's order; a maker returns None when its chart does not apply.
_MAKERS: dict[str, Callable[[SegmentationReport, pd.DataFrame], Chart | None]] = {
    "dashboard": lambda report, _: dashboard(report),
    "segment_sizes": lambda report, _: segment_sizes(report),
    "feature_distributions": lambda report, sample: feature_distributions(report, sample),
    "robustness_heatmap": lambda report, _: robustness_heatmap(report),
    "actionability_heatmap": lambda report, _: actionability_heatmap(report),
    "clv_by_segment": lambda report, _: clv_by_segment(report),
    "clv_tracking": lambda report, _: clv_tracking(report),
    "clv_calibration": lambda report, _: clv_calibration(report),
    "segment_migration": lambda report, _: migration_heatmap(report),
}
#: The charts a second process draws: about half the drawing time (seconds at 100,000 customers:
#: dashboard 0.7, feature distributions 0.55, migration 0.3, CLV 0.2, each heatmap 0.17, sizes 0.12).
SECOND_PROCESS = ("dashboard", "clv_by_segment", "actionability_heatmap", "segment_sizes", "clv_calibration")
#: How long the second process may take (it needs a second or two); then its charts are drawn here.
CHART_PROCESS_TIMEOUT_SECONDS = 120


def _draw(
    names: Sequence[str], report: SegmentationReport, feature_sample: pd.DataFrame, folder: Path
) -> dict[str, ChartFile | None]:
    drawn: dict[str, ChartFile | None] = {}
    for name in names:
        chart = _MAKERS[name](report, feature_sample)
        drawn[name] = chart.save(folder) if chart is not None else None
    return drawn


def _can_fork_a_second_process() -> bool:
    """Linux only: elsewhere a fork of a process with threads (BLAS, DuckDB, Dagster's) is not safe."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return False
    return len(os.sched_getaffinity(0)) >= 2


def _draw_beside(
    elsewhere: Sequence[str], report: SegmentationReport, feature_sample: pd.DataFrame, folder: Path
) -> dict[str, ChartFile | None]:
    """`elsewhere` drawn by a forked process while this one draws the other charts.

    The fork shares what is in memory (the report, the sample, the imported
    modules), so nothing is pickled on the way there and it starts at once; only
    the small chart records come back. The child touches nothing of the
    parent's but the output folder, and leaves with os._exit (multiprocessing's
    fork does), so the parent's exit handlers never run twice.
    """
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    # Output buffered now would be written again by the child when it flushes at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    child = context.Process(
        target=_draw_and_send,
        args=(sending, elsewhere, report, feature_sample, folder),
        name="report-charts",
        daemon=True,
    )
    try:
        child.start()
    except OSError as error:
        receiving.close()
        sending.close()
        warnings.warn(f"the chart process could not start ({error}); drawing every chart here", stacklevel=2)
        return _draw(list(_MAKERS), report, feature_sample, folder)
    sending.close()
    try:
        drawn = _draw([name for name in _MAKERS if name not in elsewhere], report, feature_sample, folder)
        theirs, problem = _answer_of(child, receiving)
        if theirs is not None:
            child.join(5)  # it answered and is on its way out
    finally:
        receiving.close()
        if child.is_alive():
            child.kill()
        child.join()
    if theirs is None:
        warnings.warn(f"the chart process {problem}; drawing {', '.join(elsewhere)} here", stacklevel=2)
        theirs = _draw(elsewhere, report, feature_sample, folder)
    return {**drawn, **theirs}


def _answer_of(child, receiving) -> tuple[dict[str, ChartFile | None] | None, str]:
    """The chart records the child sent, or None and what went wrong."""
    if not receiving.poll(CHART_PROCESS_TIMEOUT_SECONDS):
        return None, f"did not answer in {CHART_PROCESS_TIMEOUT_SECONDS} s and was stopped"
    try:
        outcome, payload = receiving.recv()
    except EOFError:
        child.join(5)
        return None, f"ended without an answer (exit code {child.exitcode})"
    except Exception as error:  # a message that cannot be read back
        return None, f"sent an answer that could not be read ({error!r})"
    if outcome != "drawn":
        return None, f"failed:\n{payload}"
    return payload, ""


def _draw_and_send(
    sending, names: Sequence[str], report: SegmentationReport, feature_sample: pd.DataFrame, folder: Path
) -> None:
    """The chart process: draw `names` and send their records, or the error's traceback."""
    try:
        sending.send(("drawn", _draw(names, report, feature_sample, folder)))
    except BaseException:
        sending.send(("failed", traceback.format_exc()))
    finally:
        sending.close()


# -------------------------------------------------------------------------- charts


def segment_sizes(report: SegmentationReport) -> Chart:
    return _one_panel(
        report,
        _draw_sizes,
        Chart(
            "segment_sizes",
            "Segment sizes",
            "Customers in each segment and their share of all segmented customers; "
            "whether viability approved the segment for targeting.",
            _figure(report, width=9.0),
        ),
        f"Customers per segment, {report.as_of}",
    )


def feature_axis_label(name: str, report: SegmentationReport) -> str:
    """An axis in words with its unit: 'days since the last purchase', 'net revenue per customer ($)'."""
    feature = FEATURES_BY_NAME[name]
    unit = report.business.unit() if feature.unit == "money" else feature.unit
    return f"{_FEATURE_TITLES.get(name, name.replace('_', ' ')).lower()} ({unit})"


def box_statistics(values: pd.DataFrame, name: str, order: list[str]) -> list[dict]:
    """Per segment in `order`: quartiles, Tukey whiskers (1.5 x IQR, at the data) and the share at 0."""
    stats = []
    for segment_id in order:
        column = values.loc[values["segment_id"] == segment_id, name].to_numpy(float)
        if column.size == 0:
            stats.append({"label": segment_id, "empty": True})
            continue
        q1, median, q3 = np.quantile(column, [0.25, 0.5, 0.75])
        low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        inside = column[(column >= low) & (column <= high)]
        stats.append(
            {
                "label": segment_id,
                "q1": q1,
                "med": median,
                "q3": q3,
                "whislo": inside.min() if inside.size else q1,
                "whishi": inside.max() if inside.size else q3,
                "zero_share": float(np.mean(column == 0)),
            }
        )
    return stats


def feature_distributions(report: SegmentationReport, feature_sample: pd.DataFrame) -> Chart:
    """Box plots of the RFM and CLV features per segment, from a fixed sample of each segment's customers.

    Linear axes ending at the AXIS_QUANTILE of all sampled customers, so a segment whose customers mostly
    sit at 0 shows as a thick median line at 0 with a note, never as nothing (a log axis has no 0). The
    boxes come from precomputed quartiles (matplotlib's bxp): no per-customer artist is drawn.
    """
    features = [name for name in DISTRIBUTION_FEATURES if name in feature_sample and feature_sample[name].notna().any()]
    if not features:
        raise ReportGenerationError("the snapshot's profiles hold none of the distribution features")
    order = [item.segment_id for item in report.segments]
    labels = {item.segment_id: segment_label(item.segment_id, item.name) for item in report.segments}
    figure = Figure(figsize=(5.2 * 2 + 2.4, 0.5 * len(order) * 2 + 2.6))
    axes = figure.subplots(2, 2, sharey=True).ravel()
    _margins(figure, left=2.5, right=0.3, top=0.85, bottom=0.65, columns=2, rows=2, wspace=0.15, hspace=0.95)
    positions = np.arange(len(order))
    for ax, name in zip(axes, features):
        values = feature_sample[["segment_id", name]].dropna()
        stats = box_statistics(values, name, order)
        drawn = [item for item in stats if not item.get("empty")]
        at = [position for position, item in zip(positions, stats) if not item.get("empty")]
        boxes = ax.bxp(
            drawn,
            positions=at,
            orientation="horizontal",
            widths=0.6,
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black", "linewidth": 2.2},
        )
        for patch, item in zip(boxes["boxes"], drawn):
            patch.set_facecolor(segment_colour(item["label"]))
            patch.set_edgecolor("#444444")
        top = float(values[name].quantile(AXIS_QUANTILE)) if len(values) else 1.0
        top = max(top, max((item["q3"] for item in drawn), default=0.0), 1.0)
        bottom = min(0.0, float(values[name].min()) if len(values) else 0.0)
        ax.set_xlim(bottom - 0.03 * (top - bottom), top * 1.05)
        for position, item in zip(at, drawn):
            if item["zero_share"] >= ZERO_NOTE_SHARE:
                ax.annotate(
                    f" {item['zero_share']:.0%} at 0",
                    (0, position),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                    color="#444444",
                )
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
        ax.set_title(_FEATURE_TITLES.get(name, name))
        ax.set_xlabel(feature_axis_label(name, report))
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_yticks(positions, [labels[segment_id] for segment_id in order], fontsize=8)
    for ax in axes[len(features) :]:
        ax.set_visible(False)
    sampled = feature_sample.groupby("segment_id").size().max()
    figure.suptitle(
        f"Key features per segment, {report.as_of} (box: middle half of customers, line: median)",
        fontweight="bold",
    )
    return Chart(
        "feature_distributions",
        "Key feature distributions",
        f"Recency, orders, net revenue and CLV of each segment's customers (up to {sampled:,} per segment, "
        "the same customers on every run); whiskers span 1.5 x the interquartile range. Linear axes that end "
        f"at the {AXIS_QUANTILE:.0%} point of all these customers; a segment mostly at 0 says so beside its box.",
        figure,
    )


def robustness_heatmap(report: SegmentationReport) -> Chart:
    return _one_panel(
        report,
        _draw_robustness,
        Chart(
            "robustness_heatmap",
            "Robustness",
            "Time-window, feature-drop and bootstrap stability of each segment (Jaccard similarity of its "
            "customers when refitted, 0-1) and the weakest of the three, which sets its band: highly stable "
            "from 0.85, stable from 0.75, shaky below.",
            _figure(report, width=8.0),
        ),
        f"Segment stability under perturbation, {report.as_of}",
    )


def actionability_heatmap(report: SegmentationReport) -> Chart:
    return _one_panel(
        report,
        _draw_actionability,
        Chart(
            "actionability_heatmap",
            "Actionability",
            "WHAT (products or lifecycle offer), WHEN (timing or purchase rhythm), HOW (channels or owned "
            "channels) and WHO (customer value) scores of each segment, 0-1, and the verdict; a grey hatched "
            "n/a cell is not measurable from this data.",
            _figure(report, width=8.0),
        ),
        f"Can a campaign be aimed at the segment? {report.as_of}",
    )


def _one_panel(report: SegmentationReport, draw: Callable[..., None], chart: Chart, heading: str) -> Chart:
    """A chart of one of the dashboard's panels on its own, under its own heading."""
    draw(chart.figure.subplots(), report)
    chart.figure.suptitle(heading, fontweight="bold")
    return chart


def clv_by_segment(report: SegmentationReport) -> Chart:
    figure = Figure(figsize=(12.0, 0.5 * len(report.segments) + 2.0))
    mean_ax, share_ax = figure.subplots(1, 2, sharey=True)
    _margins(figure, left=2.3, right=0.3, top=0.6, bottom=0.7, columns=2, wspace=0.3)
    _draw_mean_clv(mean_ax, report)
    order = _order(report)
    shares = pd.DataFrame(
        [
            {"segment": label, "measure": measure, "share": value}
            for item, label in zip(report.segments, order)
            for measure, value in (
                ("share of customers", item.profile.share_of_customers),
                ("share of total CLV", item.profile.share_of_total_clv),
            )
        ]
    )
    sns.barplot(data=shares, x="share", y="segment", hue="measure", order=order, ax=share_ax, palette="Greys")
    share_ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    share_ax.set_xlabel("share of all segmented customers / of their total lifetime value (%)")
    share_ax.set_ylabel("")
    share_ax.legend(title="", loc="lower right", fontsize=8)
    figure.suptitle(f"Customer lifetime value by segment, {report.as_of}", fontweight="bold")
    return Chart(
        "clv_by_segment",
        "CLV by segment",
        "Mean expected customer lifetime value per customer against the population mean, and each segment's "
        "share of customers beside its share of the total CLV.",
        figure,
    )


def _model_columns(value: CustomerValue, rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    """(column, label) of each model the backtest fitted that has values in `rows`, the chosen one marked."""
    columns = []
    for score in value.backtest:
        if score.kind == "model" and rows and rows[0].get(score.name) is not None:
            columns.append((score.name, f"{score.label} (used)" if score.chosen else score.label))
    return columns


def clv_tracking(report: SegmentationReport) -> Chart | None:
    """Cumulative repeat purchase days, actual against each model, across the backtest's split; None without one."""
    value = report.customer_value
    if value is None or not value.tracking or "day" not in value.tracking[0]:
        return None
    rows = value.tracking
    days = pd.to_datetime([row["day"] for row in rows])
    figure = Figure(figsize=(10.0, 4.6))
    ax = figure.subplots()
    _margins(figure, left=0.9, right=0.3, top=0.6, bottom=0.8)
    ax.plot(days, [row["actual"] for row in rows], color="black", linewidth=2.2, label="what customers did")
    for (column, label), colour in zip(_model_columns(value, rows), PALETTE):
        ax.plot(days, [row[column] for row in rows], color=colour, linewidth=1.4, linestyle="--", label=label)
    if value.backtest_split_day is not None:
        split = pd.Timestamp(value.backtest_split_day)
        ax.axvline(split, color="#59636e", linewidth=1)
        ax.text(split, ax.get_ylim()[1] * 0.97, "  forecast from here", va="top", fontsize=8, color="#59636e")
    ax.set_xlabel("date")
    ax.set_ylabel("repeat purchase days, cumulative (days)")
    ax.legend(loc="upper left", fontsize=8)
    figure.suptitle("Repeat purchases: what happened against each model", fontweight="bold")
    return Chart(
        "clv_tracking",
        "Model tracking",
        f"Cumulative repeat purchase days of the customers who had bought by {value.backtest_split_day}, as they "
        "happened (black) and as each purchase model expects them; the models were fitted on the days before the "
        f"line only, so the {value.backtest_holdout_days} days after it are a forecast.",
        figure,
    )


def clv_calibration(report: SegmentationReport) -> Chart | None:
    """Mean holdout purchase days by calibration-period frequency, actual against each model; None without one."""
    value = report.customer_value
    if value is None or not value.calibration:
        return None
    rows = value.calibration
    labels = [str(row["frequency"]) for row in rows]
    figure = Figure(figsize=(10.0, 4.6))
    ax = figure.subplots()
    _margins(figure, left=0.9, right=0.3, top=0.6, bottom=0.8)
    ax.plot(labels, [row["actual"] for row in rows], color="black", linewidth=2.2, marker="o", label="what customers did")
    for (column, label), colour in zip(_model_columns(value, rows), PALETTE):
        ax.plot(labels, [row[column] for row in rows], color=colour, linewidth=1.4, linestyle="--", marker="s", label=label)
    ax.set_xlabel(f"repeat purchase days before {value.backtest_split_day} (days)")
    ax.set_ylabel(f"mean purchase days in the next {value.backtest_holdout_days} days (days)")
    ax.legend(loc="upper left", fontsize=8)
    figure.suptitle("Forecast against what happened, by how often customers had bought", fontweight="bold")
    return Chart(
        "clv_calibration",
        "Model calibration",
        "For customers grouped by their repeat purchase days before the split, the mean purchase days they made "
        f"in the {value.backtest_holdout_days} days after it (black) and each model's forecast "
        "(Fader, Hardie & Lee 2005, figure 4).",
        figure,
    )


def migration_heatmap(report: SegmentationReport) -> Chart | None:
    """Customers from each previous segment (rows) to each current one (columns); None for a first snapshot."""
    migration = report.migration
    if migration.previous_as_of is None or not migration.moves:
        return None
    arrived, left = "new customers", "left the snapshot"
    counts = pd.DataFrame(
        [
            {
                "from": move.from_segment_id or arrived,
                "to": move.to_segment_id or left,
                "customers": move.customers,
            }
            for move in migration.moves
        ]
    ).pivot_table(index="from", columns="to", values="customers", aggfunc="sum", fill_value=0)
    names = migration.previous_names | {item.segment_id: item.name for item in report.segments}
    rows = sorted(index for index in counts.index if index != arrived) + [arrived] * (arrived in counts.index)
    columns = sorted(column for column in counts.columns if column != left) + [left] * (left in counts.columns)
    counts = counts.loc[rows, columns]
    figure = Figure(figsize=(max(8.0, 0.75 * len(columns) + 4.5), 0.42 * len(rows) + 3.2))
    ax = figure.subplots()
    _margins(figure, left=2.2, right=0.2, top=0.9, bottom=2.0)
    matrix = counts.to_numpy()
    labelled = migration_labels(counts)
    _heatmap(
        ax,
        np.where(matrix > 0, matrix, np.nan).astype(float),
        [[f"{matrix[i, j]:,}" if labelled[i, j] else "" for j in range(matrix.shape[1])] for i in range(matrix.shape[0])],
        colormaps["Blues"],
        LogNorm(vmin=1, vmax=max(1, int(matrix.max()))),
        "customers (number, log scale)",
        fontsize=7 if len(columns) > 12 else 8,
    )
    ax.set_xticks(np.arange(len(columns)) + 0.5, [_short(column, names) for column in columns], rotation=30, fontsize=8)
    ax.set_yticks(np.arange(len(rows)) + 0.5, [_short(row, names) for row in rows], rotation=0, fontsize=8)
    ax.set_xlabel(f"segment on {report.as_of}")
    ax.set_ylabel(f"segment on {migration.previous_as_of}")
    figure.suptitle(
        f"Where customers went since {migration.previous_as_of}\n{migration.stayed:,} stayed, "
        f"{migration.moved:,} moved, {migration.arrived:,} arrived, {migration.left:,} left",
        fontweight="bold",
    )
    return Chart(
        "segment_migration",
        "Segment migration",
        f"Customers by their segment on {migration.previous_as_of} (rows) and on {report.as_of} (columns); "
        "a segment ID means the same segment in both snapshots. "
        + (
            ""
            if counts.size <= MIGRATION_ALL_LABELS
            else f"Counts are written for those who stayed and the {MIGRATION_LABELLED} largest moves; "
            "the colour shows every cell."
        ),
        figure,
    )


def migration_labels(counts: pd.DataFrame) -> np.ndarray:
    """Which cells of the migration matrix carry their count: all non-zero ones of a small matrix; of a
    larger one the diagonal (same segment) and the MIGRATION_LABELLED largest other cells."""
    matrix = counts.to_numpy()
    if matrix.size <= MIGRATION_ALL_LABELS:
        return matrix > 0
    same = np.array([[row == column for column in counts.columns] for row in counts.index])
    labelled = same & (matrix > 0)
    others = np.where(~same & (matrix > 0), matrix, 0).ravel()
    largest = np.argsort(-others, kind="stable")[:MIGRATION_LABELLED]
    flat = labelled.ravel()
    flat[largest[others[largest] > 0]] = True
    return flat.reshape(matrix.shape)


def dashboard(report: SegmentationReport) -> Chart:
    """One page: sizes, value, stability and actionability side by side."""
    totals = report.totals
    figure = Figure(figsize=(16.0, 1.0 * len(report.segments) + 3.0))
    (sizes_ax, clv_ax), (robust_ax, action_ax) = figure.subplots(2, 2)
    _margins(figure, left=2.4, right=0.9, top=1.05, bottom=0.75, columns=2, rows=2, wspace=2.6, hspace=0.9)
    _draw_sizes(sizes_ax, report)
    _draw_mean_clv(clv_ax, report)
    _draw_robustness(robust_ax, report, colorbar=False)
    _draw_actionability(action_ax, report)
    sizes_ax.set_title("Customers per segment")
    clv_ax.set_title("Mean lifetime value per customer")
    robust_ax.set_title("Stability (0-1)")
    action_ax.set_title("Can a campaign say what, when, how, who? (0-1)")
    figure.suptitle(
        f"Segments as of {report.as_of}: {totals.segments} segments of {totals.customers:,} customers; "
        f"{totals.targetable} ready for a campaign ({totals.targetable_customers:,} customers)",
        fontweight="bold",
        fontsize=13,
    )
    return Chart(
        "dashboard",
        "Dashboard",
        "Sizes, customer value, stability and actionability of every segment on one page.",
        figure,
    )


def k_selection(candidates: pd.DataFrame, chosen_k: int, elbow_k: int | None, rule: str, fixed: bool = False) -> Chart:
    """How k was chosen: the elbow of the inertia curve and the criteria, each scaled to 0-1 over the
    candidates. A k fixed by the user (`fixed`) was the only one tried: the chart then says so and
    shows how well separated its segments are (`fixed_k`)."""
    if fixed:
        return fixed_k(candidates, chosen_k)
    figure = Figure(figsize=(11.0, 4.6))
    inertia_ax, criteria_ax = figure.subplots(1, 2)
    # Room on the left for the inertia's tick labels and axis label, below for the legends.
    _margins(figure, left=1.05, right=0.2, top=0.75, bottom=1.25, columns=2, wspace=0.9)
    ks = candidates["k"].to_numpy()
    inertia_ax.plot(ks, candidates["inertia"], marker="o", color="#444444", label="sum of squares")
    if elbow_k is not None:
        inertia_ax.axvline(elbow_k, color="grey", linestyle=":", label=f"elbow at k = {elbow_k}")
    inertia_ax.set_title("Spread within the segments")
    inertia_ax.set_xlabel("number of segments (k)")
    inertia_ax.set_ylabel("sum of squares (lower: tighter)")
    # Scaled as the k rule scales them (core.clustering), so the lines are what the rule weighed.
    criteria = {
        "silhouette": normalised(candidates["silhouette"].to_numpy(float)),
        "Calinski-Harabasz": normalised(candidates["calinski_harabasz"].to_numpy(float)),
        "Davies-Bouldin (inverted)": 1 - normalised(candidates["davies_bouldin"].to_numpy(float)),
        "combined score": candidates["score"].to_numpy(float),
    }
    for (label, values), style in zip(criteria.items(), ("-o", "-s", "-^", "-D")):
        if np.isfinite(values).any():
            criteria_ax.plot(ks, values, style, label=label, linewidth=2.5 if label == "combined score" else 1.2)
    criteria_ax.axvline(chosen_k, color="black", linestyle="--", label=f"chosen k = {chosen_k}")
    criteria_ax.set_ylim(-0.05, 1.05)
    criteria_ax.set_title("Criteria, each scaled to 0-1 (higher: better)")
    criteria_ax.set_xlabel("number of segments (k)")
    criteria_ax.set_ylabel("scaled criterion")
    for ax, columns in ((inertia_ax, 2), (criteria_ax, 3)):
        ax.set_xticks(ks)
        # Below the axes, where it covers no line.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=columns, frameon=False)
    figure.suptitle(f"Choosing the number of segments: k = {chosen_k} ({rule})", fontweight="bold")
    return Chart("k_selection", "k selection", f"Inertia and the k-selection criteria per candidate k; {rule}.", figure)


#: Kaufman and Rousseeuw's reading of an average silhouette width: lower edge and words, highest first.
SILHOUETTE_READING: tuple[tuple[float, str], ...] = (
    (0.7, "strong structure"),
    (0.5, "reasonable structure"),
    (0.25, "weak structure"),
    (-1.0, "little or no structure"),
)


def fixed_k(candidates: pd.DataFrame, chosen_k: int) -> Chart:
    """A k the user fixed: no other k was tried, so nothing to compare; how well separated its
    segments are, on the silhouette's own scale (-1 to 1) read after Kaufman and Rousseeuw."""
    row = candidates.loc[candidates["k"] == chosen_k].iloc[0]
    figure = Figure(figsize=(11.0, 3.0))
    ax = figure.subplots()
    _margins(figure, left=0.4, right=0.4, top=0.95, bottom=1.05)
    silhouette_value = float(row["silhouette"])
    # Negative widths are rare: the scale starts at -0.25 unless the value lies further down.
    left = min(-0.25, silhouette_value - 0.05)
    edges = [edge for edge, _ in SILHOUETTE_READING]
    colours = ("#d9ead3", "#eef5e9", "#fdf3d8", "#f8e0de")
    for (low, words), high, colour in zip(SILHOUETTE_READING, [1.0, *edges[:-1]], colours):
        ax.axvspan(low, high, color=colour)
        ax.text((max(low, left) + high) / 2, 0.85, words, ha="center", fontsize=9)
    ax.axvline(silhouette_value, color="black", linewidth=2.5)
    ax.annotate(
        f"silhouette {silhouette_value:.2f}",
        (silhouette_value, 0.4),
        xytext=(8, 0),
        textcoords="offset points",
        fontweight="bold",
        va="center",
    )
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([])
    ax.set_xlabel(
        "average silhouette width (-1 to 1; higher: customers sit closer to their own segment than to the next)\n"
        f"also: Calinski-Harabasz {row['calinski_harabasz']:,.0f} (higher: better separated), "
        f"Davies-Bouldin {row['davies_bouldin']:.2f} (lower: better), sum of squares {row['inertia']:,.0f}"
    )
    figure.suptitle(
        f"k = {chosen_k} segments, fixed by the user (n_clusters in the run's config): no other k was tried",
        fontweight="bold",
    )
    return Chart(
        "k_selection",
        "k selection",
        f"k fixed at {chosen_k} by the user; how well separated its segments are (silhouette {silhouette_value:.2f}).",
        figure,
    )


# --------------------------------------------------------------------- drawing parts


def _draw_sizes(ax, report: SegmentationReport) -> None:
    order = _order(report)
    sizes = [item.segment.size for item in report.segments]
    ax.barh(order, sizes, color=[segment_colour(item.segment_id) for item in report.segments])
    for position, item in enumerate(report.segments):
        decision = "approved" if item.viability.approved else "rejected"
        ax.annotate(
            f" {item.segment.size:,} ({item.segment.share:.0%}), {decision}",
            (item.segment.size, position),
            va="center",
            fontsize=8,
            color="black" if item.viability.approved else "firebrick",
        )
    ax.set_xlim(0, max(sizes) * 1.45)
    ax.invert_yaxis()
    ax.set_xlabel("customers (number)")
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    ax.tick_params(axis="y", labelsize=8)


def _draw_mean_clv(ax, report: SegmentationReport) -> None:
    order = _order(report)
    means = [item.segment.mean_clv for item in report.segments]
    ax.barh(order, means, color=[segment_colour(item.segment_id) for item in report.segments])
    population = report.segments[0].profile.population_mean_clv
    ax.axvline(population, color="black", linestyle="--", linewidth=1)
    business = report.business
    ax.annotate(
        f"all customers: {business.money(population)}",
        (population, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(4, -12),
        textcoords="offset points",
        fontsize=8,
    )
    for position, value in enumerate(means):
        ax.annotate(f" {business.money(value)}", (value, position), va="center", fontsize=8)
    ax.set_xlim(0, max(max(means), population, 1.0) * 1.25)
    ax.invert_yaxis()
    ax.set_xlabel(f"mean expected lifetime value per customer ({business.unit()})")
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    ax.tick_params(axis="y", labelsize=8)


def _draw_robustness(ax, report: SegmentationReport, colorbar: bool = True) -> None:
    scores = pd.DataFrame(
        [
            [getattr(item.robustness, column) for column in ROBUSTNESS_TESTS]
            + [item.weakest_test[1] if item.weakest_test else None]
            for item in report.segments
        ],
        index=_order(report),
        columns=[*ROBUSTNESS_TESTS.values(), WEAKEST_COLUMN],
        dtype=float,
    )
    annotations = scores.map(_score_text)
    annotations[WEAKEST_COLUMN] = [
        f"{text}\n{item.stability}" for text, item in zip(annotations[WEAKEST_COLUMN], report.segments)
    ]
    _score_heatmap(ax, scores, annotations, _ids(report), colorbar, "share of customers kept together (0-1)")
    ax.set_xlabel("robustness test (weakest: the segment's stability band)")


def _draw_actionability(ax, report: SegmentationReport) -> None:
    scores = pd.DataFrame(
        [
            [getattr(item.actionability, f"{dimension}_score") for dimension in ACTIONABILITY_DIMENSIONS]
            for item in report.segments
        ],
        index=[
            f"{ACTIONABLE_MARK if item.actionability.actionable else NOT_ACTIONABLE_MARK} {label}"
            for label, item in zip(_order(report), report.segments)
        ],
        columns=[dimension.upper() for dimension in ACTIONABILITY_DIMENSIONS],
        dtype=float,
    )
    _score_heatmap(ax, scores, scores.map(_score_text), _ids(report), True, "score (0-1)")
    ax.set_xlabel(
        f"WHAT offer, WHEN timing, HOW channel, WHO value ({ACTIONABLE_MARK} campaign ready, "
        f"{NOT_ACTIONABLE_MARK} not)\nn/a: not measurable from this data"
    )


def _score_text(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}"


def _score_heatmap(
    ax, scores: pd.DataFrame, annotations: pd.DataFrame, segment_ids: list[str], colorbar: bool, label: str
) -> None:
    values = scores.to_numpy(dtype=float)
    _heatmap(
        ax,
        values,
        annotations.to_numpy().tolist(),
        colormaps[SCORE_COLOURS],
        Normalize(vmin=0, vmax=1),
        label if colorbar else None,
        fontsize=9,
    )
    # Cells without a value: grey and hatched, never a colour of the scale, and say why.
    for row, column in zip(*np.nonzero(np.isnan(values))):
        ax.add_patch(
            Rectangle(
                (column, row),
                1,
                1,
                facecolor=NO_SCORE_FILL,
                hatch=NO_SCORE_HATCH,
                edgecolor=NO_SCORE_EDGE,
                linewidth=0,
            )
        )
        ax.text(
            column + 0.5, row + 0.5, annotations.iat[row, column], ha="center", va="center", fontsize=9, color="dimgrey"
        )
    ax.set_xticks(np.arange(scores.shape[1]) + 0.5, list(scores.columns), rotation=0)
    ax.set_yticks(np.arange(scores.shape[0]) + 0.5, list(scores.index), rotation=0, fontsize=8)
    for tick, segment_id in zip(ax.get_yticklabels(), segment_ids):
        tick.set_color(_darker(segment_colour(segment_id)))


def _heatmap(ax, values: np.ndarray, labels: list[list[str]], cmap, norm, colorbar: str | None, fontsize: int) -> None:
    """A matrix as coloured cells with their labels, row 0 at the top: one mesh and a text per labelled
    cell (seaborn's heatmap measured every label and tick again: most of a 20-segment chart's time)."""
    rows, columns = values.shape
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values), cmap=cmap, norm=norm, edgecolors="white", linewidth=0.5
    )
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, 0)
    ax.grid(False)  # the style's grid would cross the cells
    for spine in ax.spines.values():
        spine.set_visible(False)
    for row in range(rows):
        for column in range(columns):
            text = labels[row][column]
            value = values[row, column]
            if not text or not np.isfinite(value):
                continue
            red, green, blue, _ = cmap(norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(
                column + 0.5,
                row + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    if colorbar is not None:
        ax.figure.colorbar(mesh, ax=ax, label=colorbar, fraction=0.05, pad=0.02)
    ax.tick_params(axis="both", length=0)


def _figure(report: SegmentationReport, width: float) -> Figure:
    figure = Figure(figsize=(width, 0.55 * len(report.segments) + 1.8))
    # Room on the right for a colour bar's numbers.
    _margins(figure, left=2.5, right=0.8, top=0.6, bottom=0.75)
    return figure


def _margins(
    figure: Figure,
    *,
    left: float,
    right: float,
    top: float,
    bottom: float,
    columns: int = 1,
    rows: int = 1,
    wspace: float = 0.0,
    hspace: float = 0.0,
) -> None:
    """Fixed margins and gaps in inches, sized for the wrapped segment labels.

    Matplotlib's constrained layout measured every text of a chart once more before
    drawing it: 1.2 s of the report's 3 s of charts, at any number of customers.
    """
    width, height = figure.get_size_inches()
    axes_width = (width - left - right - (columns - 1) * wspace) / columns
    axes_height = (height - top - bottom - (rows - 1) * hspace) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wspace / axes_width,
        hspace=hspace / axes_height,
    )


def _order(report: SegmentationReport, width: int = 30) -> list[str]:
    return [segment_label(item.segment_id, item.name, width) for item in report.segments]


def _ids(report: SegmentationReport) -> list[str]:
    return [item.segment_id for item in report.segments]


def _short(key: str, names: dict[str, str]) -> str:
    return segment_label(key, names[key], 22) if key in names else key


def _darker(colour: Sequence[float]) -> tuple[float, ...]:
    return tuple(0.7 * channel for channel in colour)
