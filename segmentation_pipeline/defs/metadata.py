"""Metadata every materialization carries: row count, schema, a preview."""


import dagster as dg
import pyarrow as pa

from ..core.ingestion import PREVIEW_ROWS
from ..core.schemas import TableSpec


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The table's Arrow schema, as Dagster shows it in the asset's Columns tab."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
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
