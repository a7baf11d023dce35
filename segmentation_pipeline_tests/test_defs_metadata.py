"""What the Dagster UI shows of the tables and of each materialization: every column described with
its unit (from the same definitions as the features and the record models), numbers rounded."""

from urllib.parse import unquote
from xml.etree import ElementTree

import dagster as dg
import pyarrow as pa
import pytest

from segmentation_pipeline.core.features import FEATURES, UNITS_IN_WORDS
from segmentation_pipeline.core.schemas import (
    ACTIONABILITY,
    EXPLANATIONS,
    PROFILES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    TABLES,
    ActionabilityAnswer,
    ExplanationAnswer,
)
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.metadata import (
    INLINE_MARKDOWN_LIMIT,
    column_schema,
    number_text,
    percent_text,
    preview,
    rounded,
    sparkline,
)


@pytest.mark.parametrize("spec", TABLES.values(), ids=lambda spec: spec.name)
def test_every_column_of_every_table_has_a_description(spec) -> None:
    assert set(spec.column_descriptions) == set(spec.columns)
    short = {column: text for column, text in spec.column_descriptions.items() if len(text.split()) < 3}
    assert not short, f"{spec.name}: descriptions of fewer than three words: {short}"


def test_every_asset_shows_a_description_for_every_column() -> None:
    graph = defs.resolve_asset_graph()
    shown = {}
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).metadata.get("dagster/column_schema")
        if schema is not None:
            shown[key.to_user_string()] = {column.name: column.description for column in schema.columns}
    # Every asset that writes a table says what its columns are.
    assert {"raw_events", "id_history", "merge_map", "profiles", "clusters", "viability", "audiences"} <= set(shown)
    for asset, columns in shown.items():
        assert all(columns.values()), (asset, [name for name, text in columns.items() if not text])
    assert shown["profiles"] == PROFILES.column_descriptions


def test_profile_columns_are_described_by_the_features_themselves() -> None:
    described = PROFILES.column_descriptions
    for feature in FEATURES:
        assert described[feature.name].startswith(feature.description)
    assert described["monetary_total"] == (
        "Net revenue in the window: purchases minus refunds. Unit: money, in the source's currency."
    )
    assert described["recency_days"].endswith("Unit: days.")
    assert described["weekend_share"].endswith("Unit: share (0 to 1).")
    # A label has no unit.
    assert UNITS_IN_WORDS["channel"] == "" and "Unit" not in described["top_channel"]


def test_answer_columns_are_described_by_the_answer_models() -> None:
    assert ACTIONABILITY.column_descriptions["who_score"] == ActionabilityAnswer.model_fields["who_score"].description
    assert (
        EXPLANATIONS.column_descriptions["executive_summary"]
        == ExplanationAnswer.model_fields["executive_summary"].description
    )
    assert ACTIONABILITY.column_descriptions["fallback_reason"].startswith("Why the model's answer was replaced")


def test_quarantine_columns_say_what_the_rejected_value_was() -> None:
    assert QUARANTINE_EVENTS.column_descriptions["amount"] == (
        "The rejected row's amount as it arrived, as text. " + RAW_EVENTS.column_descriptions["amount"]
    )


def test_the_column_schema_carries_description_type_and_nullability() -> None:
    columns = {column.name: column for column in column_schema(RAW_EVENTS).columns}
    assert columns["amount"].description == RAW_EVENTS.column_descriptions["amount"]
    assert columns["amount"].type == str(pa.float64()) and columns["amount"].constraints.nullable
    assert not columns["customer_id"].constraints.nullable
    assert isinstance(column_schema(RAW_EVENTS), dg.TableSchema)


def test_numbers_in_markdown_tables_are_formatted_for_reading() -> None:
    table = pa.table(
        {
            "segment_id": ["S01", "S02"],
            "size": [12345, 56],
            "share": [0.191142, 0.808858],
            "mean_clv": [1234.5678, 1.23456],
            "distance": [0.0322939866, float("nan")],
            "relative_uplift": [0.1, -0.05],
            "is_new": [True, False],
        }
    )
    lines = preview(table, percent=["relative_uplift"]).value.splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["segment_id", "size", "share", "mean_clv", "distance", "relative_uplift", "is_new"]
    assert cells[2] == ["S01", "12,345", "19.1%", "1,235", "0.0323", "10.0%", "True"]
    assert cells[3] == ["S02", "56", "80.9%", "1.23", "", "-5.0%", "False"]
    # Numbers are right-aligned, text left.
    assert cells[1][1].endswith(":") and not cells[1][0].endswith(":")


def test_float_metadata_is_rounded_and_the_rest_kept() -> None:
    assert rounded({"rate": 0.032293986636971, "total": 1234.5678, "rows": 3, "name": "x"}) == {
        "rate": 0.0323,
        "total": 1234.57,
        "rows": 3,
        "name": "x",
    }
    assert number_text(0.000412) == "0.000412" and number_text(-3.0) == "-3" and percent_text(0.5) == "50.0%"


def test_a_sparkline_fits_where_the_asset_page_shows_markdown_without_a_click() -> None:
    """Dagster 1.13 renders a Markdown entry inline below 1,000 characters (else "[Show Markdown]")."""
    ks = list(range(2, 13))
    chart = sparkline(ks, [1 / k for k in ks], 3, "combined score by k (higher: better); chosen k = 5", "k").value
    assert len(chart) < INLINE_MARKDOWN_LIMIT == 1000
    prefix = "![combined score by k (higher: better); chosen k = 5](data:image/svg+xml,"
    assert chart.startswith(prefix) and chart.endswith(")")
    svg = unquote(chart[len(prefix) : -1])
    assert " " not in chart[len(prefix) :] and "(" not in chart[len(prefix) : -1]  # one Markdown link target
    root = ElementTree.fromstring(svg)
    (line,) = root.findall("{http://www.w3.org/2000/svg}polyline")
    points = [tuple(map(int, pair.split(","))) for pair in line.get("points").split()]
    assert len(points) == 11
    # Higher values are drawn higher (smaller y); the marked point is k = 5's.
    assert points[0][1] < points[-1][1]
    (circle,) = root.findall("{http://www.w3.org/2000/svg}circle")
    assert (int(circle.get("cx")), int(circle.get("cy"))) == points[3]
