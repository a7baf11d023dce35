"""The one Definitions object: assets, checks, jobs and resources of the engine."""

import dagster as dg

from .defs.assets.ingestion import id_history, raw_events
from .defs.jobs import SNAPSHOT_ASSETS, segmentation_job
from .defs.partitions import SETTINGS
from .defs.resources import EventSourceResource, IdentityRulesResource, LLMResource, WarehouseResource

defs = dg.Definitions(
    assets=[raw_events, id_history, *SNAPSHOT_ASSETS],
    jobs=[segmentation_job],
    resources={
        "warehouse": WarehouseResource(data_dir=str(SETTINGS.data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource.from_settings(SETTINGS),
        "llm": LLMResource.from_settings(SETTINGS),
    },
)
