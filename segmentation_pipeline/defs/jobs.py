"""Jobs: the whole graph, one daily partition at a time."""


import dagster as dg

segmentation_job = dg.define_asset_job(
    name="segmentation",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph for one day: ingestion, identity resolution and every as-of stage.",
)
