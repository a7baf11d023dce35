"""actionability and explanations: the language model's judgement and story of each segment."""

from collections import Counter

import dagster as dg
import pyarrow as pa
from pydantic import Field

from ...core.llm.actionability import DIMENSIONS, Rubric, rubric_metadata, stored_rubric
from ...core.llm.facts import stored_snapshot_facts
from ...core.llm.prompts import PROMPT_VERSION
from ...core.llm.questions import answers_table, current_evaluations, evaluate_actionability, explain_segments
from ...core.llm.runner import Answered, Answerer
from ...core.schemas import ACTIONABILITY, EXPLANATIONS, TABLES, TableSpec
from ...core.warehouse import Warehouse
from ..checks import ACTIONABILITY_CHECKS, EXPLANATIONS_CHECKS, actionability_results, explanations_results
from ..fields import field_of
from ..metadata import column_schema, counts_table, preview
from ..partitions import daily_partitions, partition_day
from ..resources import LLMResource, WarehouseResource
from .segmentation import clusters, robustness, viability

_READ_CACHE = Field(
    default=True,
    description="Serve answers cached by earlier runs (no request). Off asks the provider again and "
    "replaces the cached answers.",
)


class ActionabilityConfig(dg.Config):
    strong_score: float = field_of(Rubric, "strong_score")
    min_strong_dimensions: int = field_of(Rubric, "min_strong_dimensions")
    owned_channels: list[str] | None = Field(
        default=None,
        description=Rubric.model_fields["owned_channels"].description
        + " Unset: the business's owned channels (SEGMENTATION_OWNED_CHANNELS, the llm resource's owned_channels).",
    )
    read_cache: bool = _READ_CACHE

    def rubric(self, llm: LLMResource) -> Rubric:
        """The rubric, in the business's currency and time zone; its owned channels unless set here."""
        business = llm.business()
        return Rubric(
            strong_score=self.strong_score,
            min_strong_dimensions=self.min_strong_dimensions,
            owned_channels=list(business.owned_channels) if self.owned_channels is None else self.owned_channels,
            currency=business.currency,
            timezone=business.timezone,
        )


class ExplanationsConfig(dg.Config):
    read_cache: bool = _READ_CACHE


def _write_answers(
    context: dg.AssetExecutionContext,
    store: Warehouse,
    spec: TableSpec,
    answered: list[Answered],
    answerer: Answerer,
    file_metadata: dict[str, str] | None = None,
) -> tuple[pa.Table, dict]:
    """Store the answers; the metadata says who answered and what it cost. The API key never appears."""
    table = answers_table(answered, spec.name)
    written = store.write_partition(spec, partition_day(context), table, file_metadata)
    store.refresh_catalog(TABLES.values())
    fallbacks = [
        (item.segment_id, item.provenance.fallback_reason) for item in answered if item.provenance.fallback_reason
    ]
    for segment_id, reason in fallbacks:
        context.log.warning(f"{spec.name} of {segment_id}: the mock's answer stands in ({reason})")
    settings = answerer.settings
    metadata = {
        "dagster/row_count": table.num_rows,
        "provider": settings.provider,
        "model": settings.answering_model,
        "prompt_version": PROMPT_VERSION,
        "answer_sources": counts_table(dict(Counter(item.provenance.source for item in answered)), "source", "answers"),
        **answerer.usage.as_metadata(),
        "path": dg.MetadataValue.path(str(written.path)),
    }
    if settings.provider != "mock":
        metadata["base_url"] = settings.display_url
    if fallbacks:
        metadata["fallback_reasons"] = dg.MetadataValue.md(
            "\n".join(f"- {segment_id}: {reason}" for segment_id, reason in fallbacks)
        )
    return table, metadata


@dg.asset(
    partitions_def=daily_partitions,
    deps=[viability, robustness, clusters],
    group_name="insights",
    kinds={"parquet"},
    # One pool for every step that asks the language model: dagster.yaml can cap them across runs
    # (a backfill), while max_concurrent_requests caps the requests within one step.
    pool="llm",
    check_specs=ACTIONABILITY_CHECKS,
    metadata={"dagster/column_schema": column_schema(ACTIONABILITY)},
)
def actionability(
    context: dg.AssetExecutionContext, config: ActionabilityConfig, warehouse: WarehouseResource, llm: LLMResource
) -> dg.MaterializeResult:
    """Whether a campaign can be aimed at each segment: WHAT/WHEN/HOW/WHO scores with evidence and a verdict.

    One row per segment. The language model sees aggregate statistics only;
    `source` says whether the answer came from it, the mock, or the mock standing in.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    answerer = llm.answerer(store.llm_cache_dir, read_cache=config.read_cache)
    rubric = config.rubric(llm)
    answered = evaluate_actionability(stored_snapshot_facts(store, as_of), rubric, answerer)
    # The rubric goes with the answers: explanations send campaigns through its owned channels.
    table, metadata = _write_answers(context, store, ACTIONABILITY, answered, answerer, rubric_metadata(rubric))
    actionable = sum(1 for item in answered if item.answer.actionable)
    metadata |= {
        "rubric": rubric.describe(),
        "owned_channels": ", ".join(rubric.owned_channels) or "none",
        "actionable_segments": actionable,
        "not_actionable_segments": len(answered) - actionable,
        "not_measurable_dimensions": counts_table(
            dict(
                Counter(
                    dimension.upper()
                    for item in answered
                    for dimension in DIMENSIONS
                    if getattr(item.answer, f"{dimension}_score") is None
                )
            ),
            "dimension",
            "segments",
        ),
        "scores": preview(
            table.select(["segment_id", "what_score", "when_score", "how_score", "who_score", "actionable", "source"]),
            50,
        ),
    }
    return dg.MaterializeResult(metadata=metadata, check_results=actionability_results(store, as_of, rubric))


@dg.asset(
    partitions_def=daily_partitions,
    deps=[actionability, viability, robustness, clusters],
    group_name="insights",
    kinds={"parquet"},
    pool="llm",
    check_specs=EXPLANATIONS_CHECKS,
    metadata={"dagster/column_schema": column_schema(EXPLANATIONS)},
)
def explanations(
    context: dg.AssetExecutionContext, config: ExplanationsConfig, warehouse: WarehouseResource, llm: LLMResource
) -> dg.MaterializeResult:
    """Each segment in business language: summary, campaign recommendations, expected ROI and confidence.

    One row per segment, drawing on its statistics, robustness, viability and actionability.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    facts = stored_snapshot_facts(store, as_of)
    evaluations = current_evaluations(facts, store.read_required(ACTIONABILITY, as_of))
    answerer = llm.answerer(store.llm_cache_dir, read_cache=config.read_cache)
    # In the currency, time zone and owned channels the actionability answers were judged with.
    answered = explain_segments(facts, evaluations, answerer, stored_rubric(store, as_of).business)
    table, metadata = _write_answers(context, store, EXPLANATIONS, answered, answerer)
    metadata |= {
        "segments_with_campaigns": sum(1 for item in answered if item.answer.recommendations),
        "preview": preview(table.select(["segment_id", "expected_roi", "confidence_level", "source"]), 50),
        "summaries": dg.MetadataValue.md(
            "\n\n".join(
                f"**{item.segment_id}** ({item.answer.confidence_level} confidence): {item.answer.executive_summary}"
                for item in answered
            )
        ),
    }
    return dg.MaterializeResult(metadata=metadata, check_results=explanations_results(store, as_of))
