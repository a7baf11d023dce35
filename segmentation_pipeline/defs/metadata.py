"""Metadata every materialization carries: row count, schema, a preview."""

import base64
import io
from pathlib import Path

import dagster as dg
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


def preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.slice(0, rows).to_pandas().to_markdown(index=False))


def counts_table(counts: dict[str, int], key: str, value: str = "rows") -> dg.MetadataValue:
    lines = [f"| {key} | {value} |", "| --- | ---: |"]
    lines += [f"| {name} | {count:,} |" for name, count in counts.items()]
    return dg.MetadataValue.md("\n".join(lines) if counts else f"no {value}")


def image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG inside Markdown metadata: the asset's page in the UI shows it without opening a file."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def image_file(path: Path, alt: str, max_width: int = METADATA_IMAGE_WIDTH) -> dg.MetadataValue:
    """A PNG file inside Markdown metadata, scaled down to `max_width` pixels."""
    with Image.open(path) as picture:
        picture.thumbnail((max_width, max_width * 4))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    return image(buffer.getvalue(), alt)
