"""Jobs: the whole graph, one daily partition at a time; and the as-of assets of one day's snapshot.

Their partitions are the assets' daily partitions (Dagster infers them from the selection)."""

import dagster as dg

from .assets.activation import audience_exports, audiences
from .assets.identity import merge_map
from .assets.ingestion import id_history, raw_events
from .assets.insights import actionability, explanations
from .assets.profiles import clv_backtest, profiles
from .assets.reporting import report
from .assets.results import campaign_results
from .assets.segmentation import clusters, robustness, segment_migration, viability

#: The as-of assets of one day, in graph order: what follows ingestion in a day's run.
SNAPSHOT_ASSETS = [
    merge_map,
    campaign_results,
    clv_backtest,
    profiles,
    clusters,
    segment_migration,
    robustness,
    viability,
    actionability,
    explanations,
    audiences,
    audience_exports,
    report,
]

segmentation_job = dg.define_asset_job(
    name="segmentation",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph for one day: ingestion, identity resolution and every as-of stage.",
    # dagster.yaml runs these one at a time in queue order, so a job backfill builds days in date order.
    tags={"segmentation/whole_graph": "true"},
)

snapshot_job = dg.define_asset_job(
    name="snapshot",
    selection=SNAPSHOT_ASSETS[1:],
    description="Build one day's snapshot again from what is stored: profiles through to the report "
    "(after a late file changed that day's events).",
)

ingestion_job = dg.define_asset_job(
    name="ingestion",
    selection=[raw_events, id_history],
    description="Ingest raw_events and id_history for a day or a range of days (one run per range).",
)
