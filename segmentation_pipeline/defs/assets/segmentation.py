"""clusters, segment_migration, robustness and viability: the segments of a day, proven and priced."""

import math
from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ...core import clustering, lineage
from ...core import robustness as robustness_tests
from ...core import viability as viability_rules
from ...core.campaign_results import measured_uplifts
from ...core.clustering import ClusteringSettings, segment_customers
from ...core.features import DEFAULT_CLUSTER_FEATURES
from ...core.robustness import RobustnessSettings
from ...core.schemas import (
    CLUSTERS,
    PROFILES,
    ROBUSTNESS,
    SEGMENT_MIGRATION,
    SEGMENTS,
    SYNTHETIC_TRUTH,
    TABLES,
    VIABILITY,
    TableSpec,
)
from ...core.warehouse import Warehouse
from ..checks import (
    CLUSTERS_CHECKS,
    ROBUSTNESS_CHECKS,
    VIABILITY_CHECKS,
    clusters_results,
    robustness_results,
    viability_results,
)
from ..fields import field_of
from ..metadata import METADATA_DPI, column_schema, image, markdown_table, preview, sparkline
from ..partitions import DayResult, RunEvent, daily_partitions, for_each_day, out_of_date_after, partition_day
from ..resources import WarehouseResource
from ..snapshot_order import wait_for_earlier_snapshots
from .profiles import profiles
from .results import campaign_results

_CLUSTERING = ClusteringSettings()
_ROBUSTNESS = RobustnessSettings()


class ClustersConfig(dg.Config):
    features: list[str] = Field(
        default=list(DEFAULT_CLUSTER_FEATURES),
        description="Profile features the segments are built on (names from core.features).",
    )
    k_range: list[int] = Field(
        default=[_CLUSTERING.k_min, _CLUSTERING.k_max],
        description="Smallest and largest number of behaviour clusters considered when k is chosen automatically "
        "(segments are these clusters within lifecycle groups).",
    )
    n_clusters: int | None = Field(
        default=None,
        description="A fixed number of behaviour clusters; empty chooses k automatically within k_range.",
    )
    seed: int = Field(default=_CLUSTERING.seed, description="Random seed: equal inputs and seed give equal segments.")
    n_init: int = Field(default=_CLUSTERING.n_init, description="k-means restarts per fit; the best is kept.")
    selection_sample: int = Field(
        default=_CLUSTERING.selection_sample, description="At most this many customers are used to choose k."
    )
    minibatch_above: int = Field(
        default=_CLUSTERING.minibatch_above, description="Above this many customers MiniBatchKMeans fits the segments."
    )
    min_active_days: int = Field(
        default=_CLUSTERING.min_active_days,
        description="Customers with fewer active days are assigned to the nearest segment but do not shape them.",
    )
    within_lifecycle: bool = Field(
        default=_CLUSTERING.within_lifecycle,
        description="Build segments within lifecycle groups (prospects; new; active and loyal; at risk and "
        "lapsed), so that no segment mixes new and lapsed customers. Off: a segment is a behaviour cluster.",
    )
    max_segment_share: float = Field(
        default=_CLUSTERING.max_segment_share,
        description="A segment above this share of all customers is split by its members' behaviour.",
    )
    min_segment_share: float = Field(
        default=_CLUSTERING.min_segment_share,
        description="A segment below this share of all customers joins the nearest segment of its lifecycle group.",
    )
    match_tolerance: float = Field(
        default=_CLUSTERING.match_tolerance,
        description="A segment keeps the ID of the previous snapshot's segment whose centroid lies within this "
        "share of the median distance between this snapshot's centroids.",
    )

    def settings(self) -> ClusteringSettings:
        if len(self.k_range) != 2:
            raise dg.Failure(f"k_range must be [smallest, largest], got {self.k_range}")
        return ClusteringSettings(
            features=tuple(self.features),
            k_min=self.k_range[0],
            k_max=self.k_range[1],
            n_clusters=self.n_clusters,
            seed=self.seed,
            n_init=self.n_init,
            selection_sample=self.selection_sample,
            minibatch_above=self.minibatch_above,
            min_active_days=self.min_active_days,
            match_tolerance=self.match_tolerance,
            within_lifecycle=self.within_lifecycle,
            max_segment_share=self.max_segment_share,
            min_segment_share=self.min_segment_share,
        )


def _days_before(store: Warehouse, spec: TableSpec, as_of: date) -> list[date]:
    return store.partition_days(spec, end=as_of - timedelta(days=1))


def _previous_day(store: Warehouse, spec: TableSpec, as_of: date) -> date | None:
    days = _days_before(store, spec, as_of)
    return days[-1] if days else None


#: A snapshot's segment IDs follow the previous day's: clusters of D depends on clusters of D-1,
#: so a re-run of a day marks the days after it stale, and a backfill makes the days in order.
_PREVIOUS_SNAPSHOT = dg.AssetDep(
    "clusters", partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[profiles, _PREVIOUS_SNAPSHOT],
    # A backfill makes every day of its range in one run, in date order. With one run per day, Dagster's
    # backfill loop launched one day per 30-second iteration and held back every later stage until the
    # last day was done (a 30-day backfill: 15 minutes of clusters alone); now the stages after it get
    # one run per day, launched together.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="segmentation",
    kinds={"parquet", "scikitlearn"},
    check_specs=CLUSTERS_CHECKS,
    metadata={"dagster/column_schema": column_schema(CLUSTERS)},
)
def clusters(
    context: dg.AssetExecutionContext, config: ClustersConfig, warehouse: WarehouseResource
) -> Iterator[RunEvent]:
    """The segment of every profiled customer (clusters) and the segment definitions (segments table).

    One row per canonical customer; the segments table has one row per segment
    with its size, value, centroid, name and traits. Segment IDs follow the
    previous snapshot's where the segments match.
    """
    store = warehouse.warehouse()
    # In date order: each day's IDs follow the day before.
    yield from for_each_day(context, lambda as_of: _cluster_day(context, store, as_of, config))


def _cluster_day(
    context: dg.AssetExecutionContext, store: Warehouse, as_of: date, config: ClustersConfig
) -> DayResult:
    """Segment one day's profiles and store clusters and segments; the day's metadata and checks."""
    # The charts module (matplotlib, seaborn) is imported by the steps that draw, not by every run's process.
    from ...core.reporting import charts

    # Other runs still making earlier days (runs of several days side by side) are waited for, so
    # that the previous snapshot read here is the one a run of the days in order would read.
    wait_for_earlier_snapshots(context, as_of)
    basis = lineage.previous_snapshot(store, as_of)
    result = segment_customers(
        store.read_required(PROFILES, as_of), config.settings(), basis.segments, basis.segment_ids_before
    )
    written = store.write_partition(CLUSTERS, as_of, result.assignments)
    segments_written = store.write_partition(SEGMENTS, as_of, result.segments)
    store.refresh_catalog(TABLES.values())
    selection = result.selection
    # A k the user fixed was the only one tried: no elbow, no combined score to show.
    fixed = config.n_clusters is not None
    candidates = selection.as_table().drop(columns=["score"] if fixed else [])
    metadata = {
        "dagster/row_count": result.assignments.num_rows,
        "segments_count": result.k,
        "k": selection.k,
        "k_rule": f"fixed by the user: n_clusters = {selection.k} in the run's config (no other k was tried)"
        if fixed
        else selection.rule,
        **({"elbow_k": selection.elbow_k} if selection.elbow_k is not None else {}),
        "k_candidates": markdown_table(candidates),
        **_k_scores_at_a_glance(selection, fixed),
        "k_selection_chart": image(
            charts.k_selection(
                selection.as_table(), selection.k, selection.elbow_k, selection.rule, fixed=fixed
            ).png(dpi=METADATA_DPI),
            "k selection",
        ),
        "lifecycle_adjustments": result.notes or ["none"],
        "features_used": result.matrix.columns,
        "features_without_values": result.matrix.dropped,
        "customers_shaping_segments": int(result.shaping.sum()),
        "previous_snapshot": basis.day.isoformat() if basis.day else "none",
        "previous_snapshot_sha256": basis.segments_sha256 or "none",
        "new_segment_ids": [row["segment_id"] for row in result.segments.to_pylist() if row["is_new"]],
        "segments": preview(result.segments.select(["segment_id", "name", "size", "share", "mean_clv", "is_new"]), 50),
        "path": dg.MetadataValue.path(str(written.path)),
        "segments_path": dg.MetadataValue.path(str(segments_written.path)),
    }
    metadata.update(_agreement_with_truth(store, result))
    return DayResult(metadata, clusters_results(store, as_of, basis))


def _k_scores_at_a_glance(selection: clustering.KSelection, fixed: bool) -> dict[str, dg.MetadataValue]:
    """The combined score of each candidate k as a chart small enough for the asset's page to show
    without a click (the full k chart opens with one); none for a k the user fixed."""
    ks = [candidate.k for candidate in selection.candidates]
    scores = [candidate.score for candidate in selection.candidates]
    if fixed or len(ks) < 2 or not all(math.isfinite(score) for score in scores):
        return {}
    title = f"combined score by k (higher: better); chosen k = {selection.k}"
    return {"k_scores": sparkline(ks, scores, ks.index(selection.k), title, "k")}


def _agreement_with_truth(store: Warehouse, result: clustering.Segmentation) -> dict[str, float | int]:
    """Adjusted Rand index against the synthetic source's archetypes, when that ground truth exists.

    The archetypes are behaviours, independent of the lifecycle, so they are compared with the behaviour
    clusters (over every customer, over the established ones that shaped them and over the rest); the
    segments, which also split each behaviour by lifecycle group, score lower by construction."""
    if not store.has_files(SYNTHETIC_TRUTH):
        return {}
    truth = store.read_unpartitioned(SYNTHETIC_TRUTH)
    return {
        name: round(value, 4) if isinstance(value, float) else value
        for name, value in clustering.agreement_with_truth(result.assignments, truth).items()
    }


@dg.asset(
    partitions_def=daily_partitions,
    deps=[clusters],
    group_name="segmentation",
    kinds={"parquet"},
    metadata={"dagster/column_schema": column_schema(SEGMENT_MIGRATION)},
)
def segment_migration(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Customers moving between segments since the previous snapshot.

    One row per (previous segment, current segment) pair with the number of
    customers; a null previous segment counts arrivals, a null current one departures.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    previous_day = _previous_day(store, CLUSTERS, as_of)
    previous = store.read_partition(CLUSTERS, previous_day) if previous_day else None
    moves = clustering.segment_migration(previous, store.read_required(CLUSTERS, as_of), previous_day)
    written = store.write_partition(SEGMENT_MIGRATION, as_of, moves)
    store.refresh_catalog(TABLES.values())
    frame = moves.to_pandas()
    stayed = int(frame.loc[frame.from_segment_id == frame.to_segment_id, "customers"].sum())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": moves.num_rows,
            "previous_snapshot": previous_day.isoformat() if previous_day else "none",
            "customers_stayed": stayed,
            "customers_moved": int(
                frame.loc[
                    frame.from_segment_id.notna()
                    & frame.to_segment_id.notna()
                    & (frame.from_segment_id != frame.to_segment_id),
                    "customers",
                ].sum()
            ),
            "customers_arrived": int(frame.loc[frame.from_segment_id.isna(), "customers"].sum()),
            "customers_left": int(frame.loc[frame.to_segment_id.isna(), "customers"].sum()),
            "path": dg.MetadataValue.path(str(written.path)),
            "preview": preview(moves, 50),
        }
    )


class RobustnessConfig(dg.Config):
    n_bootstrap: int = Field(default=_ROBUSTNESS.n_bootstrap, description="Bootstrap resamples per snapshot (B).")
    sample_size: int = Field(
        default=_ROBUSTNESS.sample_size,
        description="Customers per bootstrap resample and per feature-drop refit: bounds the cost at any size.",
    )
    feature_drop_weight: float = Field(
        default=_ROBUSTNESS.feature_drop_weight, description="Weight in the overall score."
    )
    time_window_weight: float = Field(
        default=_ROBUSTNESS.time_window_weight, description="Weight in the overall score."
    )
    bootstrap_weight: float = Field(default=_ROBUSTNESS.bootstrap_weight, description="Weight in the overall score.")
    production_ready_threshold: float = Field(
        default=_ROBUSTNESS.production_ready_threshold,
        description="Overall score a production-ready segment reaches (0.75: 'stable' after Hennig).",
    )
    min_test_score: float = Field(
        default=_ROBUSTNESS.min_test_score,
        description="No single test of a production-ready segment scores below this.",
    )
    window_lookback_share: list[float] = Field(
        default=[0.5, 1.0],
        description="Time-window test: each alternative window's length as a share of the profiles' window.",
    )
    window_shift_days: list[int] = Field(
        default=[0, 30],
        description="Time-window test: how many days before the as-of day each alternative window ends "
        "(paired with window_lookback_share).",
    )
    seed: int = Field(default=_CLUSTERING.seed, description="Seed of the resampling and the refits.")

    def settings(self) -> RobustnessSettings:
        return RobustnessSettings(
            feature_drop_weight=self.feature_drop_weight,
            time_window_weight=self.time_window_weight,
            bootstrap_weight=self.bootstrap_weight,
            n_bootstrap=self.n_bootstrap,
            sample_size=self.sample_size,
            production_ready_threshold=self.production_ready_threshold,
            min_test_score=self.min_test_score,
        )

    def windows(self) -> list[tuple[float, int]]:
        if len(self.window_lookback_share) != len(self.window_shift_days):
            raise dg.Failure("window_lookback_share and window_shift_days must have the same length")
        return list(zip(self.window_lookback_share, self.window_shift_days))


@dg.asset(
    partitions_def=daily_partitions,
    # The time-window test profiles other windows from raw_events and merge_map, as profiles does.
    deps=[clusters, profiles],
    group_name="segmentation",
    kinds={"parquet", "scikitlearn"},
    check_specs=ROBUSTNESS_CHECKS,
    metadata={"dagster/column_schema": column_schema(ROBUSTNESS)},
)
def robustness(
    context: dg.AssetExecutionContext, config: RobustnessConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """How stable each segment is: feature-drop, time-window and bootstrap Jaccard, overall score and band.

    One row per segment. Bands after Hennig's clusterboot: <= 0.5 dissolved,
    0.6-0.75 doubtful, >= 0.75 stable, >= 0.85 highly stable.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    assessment = robustness_tests.assess_snapshot(store, as_of, config.settings(), config.windows(), config.seed)
    written = store.write_partition(ROBUSTNESS, as_of, assessment.table)
    store.refresh_catalog(TABLES.values())
    bands = assessment.table["band"].value_counts().to_pylist()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": assessment.table.num_rows,
            "production_ready_segments": int(pc.sum(assessment.table["production_ready"]).as_py() or 0),
            "bands": dg.MetadataValue.json({item["values"]: item["counts"] for item in bands}),
            "time_windows": [f"{days} days ending {shift} days earlier" for days, shift in assessment.windows],
            "scores": preview(assessment.table, 50),
            "feature_drop": markdown_table(assessment.feature_drop),
            "path": dg.MetadataValue.path(str(written.path)),
            **out_of_date_after(context, as_of),
        },
        check_results=robustness_results(store, as_of),
    )


_CRITERIA, _ECONOMICS = viability_rules.ValidationCriteria, viability_rules.CampaignEconomics


class ViabilityConfig(dg.Config):
    min_segment_size: int = field_of(_CRITERIA, "min_segment_size")
    max_segment_size_pct: float = field_of(_CRITERIA, "max_segment_size_pct")
    min_total_clv: float = field_of(_CRITERIA, "min_total_clv")
    min_feature_stability: float = field_of(_CRITERIA, "min_feature_stability")
    min_overall_robustness: float = field_of(_CRITERIA, "min_overall_robustness")
    min_expected_roi: float = field_of(_CRITERIA, "min_expected_roi")
    campaign_cost_per_customer: float = field_of(_ECONOMICS, "campaign_cost_per_customer")
    expected_uplift: float = field_of(_ECONOMICS, "expected_uplift")
    margin: float = field_of(_ECONOMICS, "margin")
    use_measured_uplift: bool = field_of(_ECONOMICS, "use_measured_uplift")
    min_control_customers: int = field_of(_ECONOMICS, "min_control_customers")

    def criteria(self) -> viability_rules.ValidationCriteria:
        return viability_rules.ValidationCriteria(
            **self.model_dump(include=set(viability_rules.ValidationCriteria.model_fields))
        )

    def economics(self) -> viability_rules.CampaignEconomics:
        return viability_rules.CampaignEconomics(
            **self.model_dump(include=set(viability_rules.CampaignEconomics.model_fields))
        )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[robustness, clusters, campaign_results],
    group_name="segmentation",
    kinds={"parquet"},
    check_specs=VIABILITY_CHECKS,
    metadata={"dagster/column_schema": column_schema(VIABILITY)},
)
def viability(
    context: dg.AssetExecutionContext, config: ViabilityConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Whether each segment is worth targeting: size, value, stability and campaign ROI, with reasons.

    One row per segment, approved or rejected; a rejection is a result, not an error. The ROI is priced
    at the segment's latest measured uplift (campaign_results of this day or earlier) where there is one,
    else at expected_uplift; uplift_source says which.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    economics = config.economics()
    measured = measured_uplifts(store, as_of, economics.min_control_customers)
    decisions = viability_rules.assess_viability(
        store.read_required(SEGMENTS, as_of).to_pandas(),
        store.read_required(ROBUSTNESS, as_of).to_pandas(),
        config.criteria(),
        economics,
        measured,
    )
    table = pa.Table.from_pandas(decisions, preserve_index=False)
    written = store.write_partition(VIABILITY, as_of, table)
    store.refresh_catalog(TABLES.values())
    approved = int(decisions["approved"].sum())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(decisions),
            "approved_segments": approved,
            "rejected_segments": len(decisions) - approved,
            "segments_at_measured_uplift": int((decisions["uplift_source"] == viability_rules.MEASURED).sum()),
            "decisions": markdown_table(
                decisions[
                    ["segment_id", "size", "uplift_used", "uplift_source", "expected_roi", "strategic_tier", "approved",
                     "reasons"]
                ],
                percent=["uplift_used"],
            ),
            "path": dg.MetadataValue.path(str(written.path)),
            **out_of_date_after(context, as_of),
        },
        check_results=viability_results(store, as_of),
    )
