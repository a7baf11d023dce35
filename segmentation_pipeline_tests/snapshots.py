"""A small stored snapshot through every stage, for the tests of what reads all of them (the report)."""

from datetime import date
from pathlib import Path

import dagster as dg

from segmentation_pipeline.core import synthetic
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.sources import EVENTS, MERGES
from segmentation_pipeline.core.warehouse import Warehouse, days_between
from segmentation_pipeline.defs.jobs import SNAPSHOT_ASSETS
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)

DAY = date(2025, 12, 31)
FIRST_DAY = date(2025, 6, 1)
SOURCE = synthetic.SyntheticSettings(n_customers=2000)
#: The as-of stages before the report, in graph order.
STAGES = [asset for asset in SNAPSHOT_ASSETS if asset.key.to_user_string() != "report"]
#: A cheaper robustness run than the default; the report must record this setting.
STAGE_CONFIG = {"robustness": {"config": {"n_bootstrap": 5}}}


def resources(data_dir: Path) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(n_customers=SOURCE.n_customers),
        "llm": LLMResource(),
        "webhook": WebhookResource(),
    }


def build_snapshots(instance: dg.DagsterInstance, data_dir: Path, as_of: list[date]) -> None:
    """Synthetic history from FIRST_DAY to the last day of `as_of`, and every stage up to explanations
    for each day of `as_of` in order (segment IDs follow the previous snapshot)."""
    warehouse = Warehouse(data_dir)
    days = days_between(FIRST_DAY, max(as_of))
    ingest(warehouse, EVENTS, days, SOURCE, ())
    ingest(warehouse, MERGES, days, SOURCE, ())
    for day in as_of:
        result = dg.materialize(
            STAGES,
            instance=instance,
            resources=resources(data_dir),
            partition_key=day.isoformat(),
            run_config=dg.RunConfig(STAGE_CONFIG),
        )
        assert result.success
