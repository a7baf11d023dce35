"""Metadata every materialization carries: row count, schema, a preview."""

import base64
import io
import math
from collections.abc import Collection, Mapping, Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pandas as pd
import pyarrow as pa
from PIL import Image

from ..core.ingestion import PREVIEW_ROWS
from ..core.schemas import TableSpec

#: Charts in metadata are drawn smaller than the report's: the event log keeps every one of them.
METADATA_DPI = 70
METADATA_IMAGE_WIDTH = 1100


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The table's Arrow schema with each column's description and unit, as Dagster shows it in the
    asset's Columns tab."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=spec.column_descriptions[field.name],
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in spec.schema
        ]
    )


def preview(table: pa.Table, rows: int = PREVIEW_ROWS, percent: Collection[str] = ()) -> dg.MetadataValue:
    """The first rows of a table as Markdown, numbers formatted (see `markdown_table`)."""
    return markdown_table(table.slice(0, rows).to_pandas(), percent)


def markdown_table(frame: pd.DataFrame, percent: Collection[str] = (), index: bool = False) -> dg.MetadataValue:
    """A table as Markdown with its numbers as a person reads them: shares and rates (columns named
    share, *_share, *_rate, and those in `percent`) as percentages (0.191142: 19.1%), other
    decimals rounded (1,234 / 12.35 / 0.0323), whole numbers with thousands separators."""
    shown = frame.copy()
    numeric = []
    for column in shown.columns:
        values = shown[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            continue
        numeric.append(column)
        as_percent = _is_share(str(column)) or column in percent
        shown[column] = [
            percent_text(value) if as_percent else number_text(value)
            for value in values.astype(float)
        ]
    align = tuple("right" if column in numeric else "left" for column in shown.columns)
    if index:
        align = ("left", *align)
    return dg.MetadataValue.md(shown.to_markdown(index=index, colalign=align, disable_numparse=True))


def _is_share(column: str) -> bool:
    return column == "share" or column.endswith(("_share", "_rate"))


def number_text(value: float) -> str:
    """1234.5678: 1,235; 12.3456: 12.35; 0.032294: 0.0323; a missing value: empty."""
    if math.isnan(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def percent_text(value: float) -> str:
    """0.191142: 19.1%; a missing value: empty."""
    return "" if math.isnan(value) else f"{value:.1%}"


def rounded(metadata: Mapping[str, object]) -> dict[str, object]:
    """The metadata with each float rounded to what a person reads: 4 decimals below 10 (a rate of
    0.032293986636971 shows 0.0323), 2 above; other values as they are."""
    return {
        key: (round(value, 4 if abs(value) < 10 else 2) if isinstance(value, float) and math.isfinite(value) else value)
        for key, value in metadata.items()
    }


def counts_table(counts: dict[str, int], key: str, value: str = "rows") -> dg.MetadataValue:
    lines = [f"| {key} | {value} |", "| --- | ---: |"]
    lines += [f"| {name} | {count:,} |" for name, count in counts.items()]
    return dg.MetadataValue.md("\n".join(lines) if counts else f"no {value}")


#: Dagster 1.13 shows a Markdown entry on the asset's page without a click only when it is shorter
#: than this (dagster-webserver's ui-core/src/metadata/MetadataEntry.tsx: `expandSmallValues &&
#: entry.mdStr.length < 1000`, else "[Show Markdown]"); it has no image metadata type, and a PNG
#: inside Markdown is far longer. A chart drawn as a small SVG fits.
INLINE_MARKDOWN_LIMIT = 1000


def sparkline(xs: Sequence[float], ys: Sequence[float], marked: int, title: str, x_label: str) -> dg.MetadataValue:
    """A line chart of (xs, ys) with the point `marked` (an index) ringed, small enough for the asset's
    page to show without a click: an SVG inside Markdown, under `INLINE_MARKDOWN_LIMIT` characters."""
    width, height, left, right, top, bottom = 300, 66, 14, 286, 17, 52
    low, high = min(ys), max(ys)
    span_y = (high - low) or 1.0
    span_x = (xs[-1] - xs[0]) or 1.0

    def point(x: float, y: float) -> tuple[int, int]:
        return round(left + (x - xs[0]) / span_x * (right - left)), round(bottom - (y - low) / span_y * (bottom - top))

    points = " ".join("{},{}".format(*point(x, y)) for x, y in zip(xs, ys, strict=True))
    cx, cy = point(xs[marked], ys[marked])
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-family='sans-serif' "
        f"font-size='10'><text x='2' y='10'>{escape(title)}</text>"
        f"<polyline points='{points}' fill='none' stroke='#c44e52' stroke-width='2'/>"
        f"<circle cx='{cx}' cy='{cy}' r='4'/>"
        f"<text x='{left}' y='{height - 2}'>{escape(x_label)} {xs[0]:g}</text>"
        f"<text x='{right}' y='{height - 2}' text-anchor='end'>{xs[-1]:g}</text></svg>"
    )
    # Spaces, angle brackets and parentheses escaped: the URL stays one Markdown link target.
    url = "data:image/svg+xml," + quote(svg, safe="=:/',.")
    markdown = f"![{title}]({url})"
    if len(markdown) >= INLINE_MARKDOWN_LIMIT:
        raise ValueError(f"an inline chart of {len(markdown)} characters would hide behind [Show Markdown]: {title}")
    return dg.MetadataValue.md(markdown)


def image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG inside Markdown metadata: the asset's page in the UI shows it behind "[Show Markdown]"
    (see INLINE_MARKDOWN_LIMIT), without opening a file."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def image_file(path: Path, alt: str, max_width: int = METADATA_IMAGE_WIDTH) -> dg.MetadataValue:
    """A PNG file inside Markdown metadata, scaled down to `max_width` pixels."""
    with Image.open(path) as picture:
        picture.thumbnail((max_width, max_width * 4))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    return image(buffer.getvalue(), alt)
