"""The one Definitions object: assets, checks, jobs and resources of the engine."""

import dagster as dg

from .defs.assets.identity import merge_map
from .defs.assets.ingestion import id_history, raw_events
from .defs.assets.insights import actionability, explanations
from .defs.assets.profiles import profiles
from .defs.assets.reporting import report
from .defs.assets.segmentation import clusters, robustness, segment_migration, viability
from .defs.jobs import segmentation_job
from .defs.partitions import SETTINGS
from .defs.resources import EventSourceResource, IdentityRulesResource, LLMResource, WarehouseResource

defs = dg.Definitions(
    assets=[
        raw_events,
        id_history,
        merge_map,
        profiles,
        clusters,
        segment_migration,
        robustness,
        viability,
        actionability,
        explanations,
        report,
    ],
    jobs=[segmentation_job],
    resources={
        "warehouse": WarehouseResource(data_dir=str(SETTINGS.data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource.from_settings(SETTINGS),
        "llm": LLMResource.from_settings(SETTINGS),
    },
)
