"""Writing a report's folder (JSON, Markdown, HTML and the charts) in one step, and reading it back.

Each publication is a new folder under `reports/.versions/`; `reports/date=YYYY-MM-DD`
is a symbolic link to the current one, replaced in one rename (core.versions). A
reader sees the previous report or the new one, never a mix or nothing, and a chart
a new run no longer draws does not linger. Publications of one day take turns; the
last to publish wins.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date
from html import escape
from pathlib import Path

from pydantic import ValidationError

from ..errors import ReportGenerationError
from ..versions import publish_version
from .document import ReportDraft, SegmentationReport
from .render import HTML_FILE, JSON_FILE, MARKDOWN_FILE, PDF_FILE, html, markdown, md_text

#: Beside the day links: every version of every day's report folder.


@dataclass(frozen=True)
class PublishedReport:
    report: SegmentationReport
    folder: Path

    @property
    def json_path(self) -> Path:
        return self.folder / JSON_FILE

    @property
    def markdown_path(self) -> Path:
        return self.folder / MARKDOWN_FILE

    @property
    def html_path(self) -> Path:
        return self.folder / HTML_FILE

    @property
    def pdf_path(self) -> Path:
        return self.folder / PDF_FILE

    def chart_path(self, name: str) -> Path:
        for chart in self.report.charts:
            if chart.name == name:
                return self.folder / chart.file
        raise KeyError(name)


def publish_report(draft: ReportDraft, folder: Path) -> PublishedReport:
    """Draw the charts and write the report's files, then make `folder` the new version in one step."""

    def write(version: Path) -> SegmentationReport:
        charts = _charts().save_charts(draft.report, draft.feature_sample, version)
        report = draft.report.model_copy(update={"charts": charts})
        (version / JSON_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (version / MARKDOWN_FILE).write_text(markdown(report), encoding="utf-8")
        (version / HTML_FILE).write_text(html(report, version), encoding="utf-8")
        from .summary_pdf import write_summary_pdf  # matplotlib, as the charts

        write_summary_pdf(report, version, version / PDF_FILE)
        return report

    return PublishedReport(report=publish_version(folder, write), folder=folder)


def load_report(path: Path) -> SegmentationReport:
    """A report.json (or the folder holding one) as the model it was written from."""
    path = path / JSON_FILE if path.is_dir() else path
    try:
        return SegmentationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportGenerationError(f"no report at {path}") from exc
    except ValidationError as exc:
        raise ReportGenerationError(f"{path} is not a segmentation report: {exc}") from exc


def verify_report(folder: Path, as_of: date, segments: dict[str, str]) -> list[str]:
    """What is wrong with the stored report in `folder` for the snapshot of `as_of` with `segments` (ID -> name).

    Reads the files as a reader would: the JSON must load into the model, be of that day and
    list exactly the snapshot's segments and its charts; every chart must be a PNG of its
    recorded size; the page must name every segment and embed every chart; the Markdown
    must name every segment; the printable summary must be a PDF.
    """
    try:
        report = load_report(folder)
    except ReportGenerationError as exc:
        return [str(exc)]
    problems = []
    if report.as_of != as_of:
        problems.append(f"{JSON_FILE} is the report of {report.as_of}, not of {as_of}")
    if not report.charts:
        problems.append(f"{JSON_FILE} lists no charts")
    listed = {item.segment_id: item.name for item in report.segments}
    if listed != segments:
        problems.append(f"{JSON_FILE} lists segments {sorted(listed)}, the snapshot has {sorted(segments)}")
    page = _read_text(folder / HTML_FILE, problems)
    summary = _read_text(folder / MARKDOWN_FILE, problems)
    pdf = folder / PDF_FILE
    if not pdf.is_file():
        problems.append(f"{PDF_FILE} is missing")
    elif pdf.read_bytes()[:5] != b"%PDF-":
        problems.append(f"{PDF_FILE} is not a PDF document")
    for segment_id, name in segments.items():
        if page is not None and (f'id="{escape(segment_id)}"' not in page or escape(name) not in page):
            problems.append(f"{HTML_FILE} has no section for {segment_id} {name}")
        if summary is not None and md_text(f"{segment_id} {name}") not in summary:
            problems.append(f"{MARKDOWN_FILE} does not name {segment_id} {name}")
    for chart in report.charts:
        path = folder / chart.file
        if not path.is_file():
            problems.append(f"chart {chart.file} is missing")
            continue
        data = path.read_bytes()
        try:
            size = _charts().png_size(data)
        except ReportGenerationError:
            problems.append(f"chart {chart.file} is not a PNG image")
            continue
        if size != (chart.width_px, chart.height_px):
            problems.append(
                f"chart {chart.file} is {size[0]}x{size[1]}, the report says {chart.width_px}x{chart.height_px}"
            )
        if page is not None and base64.b64encode(data).decode("ascii") not in page:
            problems.append(f"{HTML_FILE} does not embed {chart.file}")
    return problems


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path.name} is missing")
        return None


def _charts():
    """The charts module, imported when first needed: matplotlib and seaborn take two seconds to
    import, and every Dagster run's process imports this module (its checks use verify_report)."""
    from . import charts

    return charts
