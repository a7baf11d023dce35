"""Jobs: the whole graph, one daily partition at a time."""


import dagster as dg

from .partitions import daily_partitions

segmentation_job = dg.define_asset_job(
    name="segmentation",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Materialize the whole graph for one day: ingestion, identity resolution and every as-of stage.",
)
