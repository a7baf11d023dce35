"""The printable summary: one page of what to launch, then the report's charts, as one PDF.

Made with matplotlib's PdfPages (no browser): the first page holds the brief's
headline, the campaigns to launch and what changed, as the first screen of the
HTML page does; each further page is one of the report's charts, the PNG file
the page embeds, so the PDF and the page always show the same charts.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .document import SegmentationReport
from .render import CAMPAIGN_HEADERS, campaign_rows, change_lines, headline, notices, timing_note

#: A4 landscape, in inches.
PAGE = (11.69, 8.27)
#: Resolution of the charts in the PDF: that of the PNG files (charts.DPI), so a chart is never enlarged.
PRINT_DPI = 110
#: Campaigns listed on the first page; the rest are counted, the HTML page lists them all.
CAMPAIGNS_ON_PAGE = 12
#: Fixed metadata: the same report gives the same bytes (a re-run rewrites an identical file).
_METADATA = {"Creator": "segmentation report", "Producer": None, "CreationDate": None}
#: Column widths of the campaigns table, as shares of the page's width.
_WIDTHS = (0.19, 0.1, 0.2, 0.06, 0.17, 0.07, 0.08, 0.06, 0.07)


def write_summary_pdf(report: SegmentationReport, folder: Path, path: Path) -> None:
    """The one-page brief and a page per chart (the PNG files in `folder`), written to `path`."""
    # Light compression: the chart images are most of the file, and the default level took four times as long
    # for a file a fifth smaller.
    with rc_context({"pdf.compression": 1}), PdfPages(path, metadata=_METADATA) as pdf:
        pdf.savefig(_brief_page(report))
        for chart in report.charts:
            pdf.savefig(_chart_page(report, folder / chart.file, chart.title, chart.description))


def _brief_page(report: SegmentationReport) -> Figure:
    figure = Figure(figsize=PAGE)
    left, width = 0.04, 0.92
    figure.text(left, 0.95, f"Campaign brief: customer segments as of {report.as_of}", fontsize=16, weight="bold")
    y = 0.915
    for line in [*notices(report), headline(report)]:
        wrapped = textwrap.fill(line, 150)
        figure.text(
            left, y, wrapped, fontsize=9.5, va="top", color="firebrick" if line != headline(report) else "black"
        )
        y -= 0.022 * (wrapped.count("\n") + 1) + 0.01
    figure.text(left, y - 0.005, "Campaigns to launch", fontsize=12, weight="bold", va="top")
    y -= 0.04
    rows = [
        [textwrap.fill(cell, _characters(share), max_lines=2, placeholder="...") for cell, share in zip(row, _WIDTHS)]
        for row in campaign_rows(report)
    ]
    shown = rows[:CAMPAIGNS_ON_PAGE]
    if shown:
        height = 0.036 * (len(shown) + 1)
        ax = figure.add_axes((left, y - height, width, height))
        ax.axis("off")
        table = ax.table(
            cellText=shown,
            colLabels=[textwrap.fill(name, _characters(share)) for name, share in zip(CAMPAIGN_HEADERS, _WIDTHS)],
            colWidths=list(_WIDTHS),
            loc="upper left",
            cellLoc="left",
            bbox=(0, 0, 1, 1),
        )
        table.auto_set_font_size(False)
        table.set_fontsize(6.5)
        for (row, _), cell in table.get_celld().items():
            cell.set_edgecolor("#d0d7de")
            if row == 0:
                cell.set_facecolor("#f0f3f6")
                cell.set_text_props(weight="bold")
        y -= height + 0.02
    else:
        figure.text(left, y, "No campaign to launch today.", fontsize=10, va="top")
        y -= 0.04
    more = len(rows) - len(shown)
    note = (f"{more} more campaigns in report.html. " if more > 0 else "") + timing_note(report)
    figure.text(left, y, textwrap.fill(note, 170), fontsize=7.5, va="top", color="#59636e")
    y -= 0.05
    figure.text(left, y, "What changed", fontsize=12, weight="bold", va="top")
    y -= 0.035
    for line in change_lines(report)[:6]:
        wrapped = textwrap.fill(line, 170, max_lines=3, placeholder=" ...")
        figure.text(left, y, wrapped, fontsize=8, va="top")
        y -= 0.02 * (wrapped.count("\n") + 1) + 0.008
        if y < 0.05:
            break
    return figure


def _characters(share: float) -> int:
    """Characters of the table's small print that fit a column of `share` of the page's width."""
    return max(6, int(share * 165))


def _chart_page(report: SegmentationReport, image: Path, title: str, description: str) -> Figure:
    figure = Figure(figsize=PAGE)
    figure.text(0.04, 0.96, f"{title} ({report.as_of})", fontsize=12, weight="bold", va="top")
    figure.text(0.04, 0.925, textwrap.fill(description, 180), fontsize=7.5, va="top", color="#59636e")
    box = (0.02, 0.02, 0.96, 0.86)
    ax = figure.add_axes(box)
    ax.imshow(_rgb(image, (PAGE[0] * box[2] * PRINT_DPI, PAGE[1] * box[3] * PRINT_DPI)), interpolation="none")
    ax.axis("off")
    return figure


def _rgb(image: Path, box_px: tuple[float, float]) -> np.ndarray:
    """The PNG as 8-bit RGB (no alpha channel for the PDF to store as a second image), no larger than the
    box it is printed in at PRINT_DPI: most of the PDF's time went into encoding pixels no printer shows."""
    from PIL import Image

    with Image.open(image) as picture:
        rgb = picture.convert("RGB")
    scale = min(box_px[0] / rgb.width, box_px[1] / rgb.height)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BOX)
    return np.asarray(rgb)
