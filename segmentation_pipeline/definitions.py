"""The one Definitions object: assets, checks, jobs, the nightly schedule, the sensors and resources."""

import gc

import dagster as dg

from .defs import known_warnings

# Before the assets are defined: Dagster warns as they are (defs/known_warnings.py says which and why).
known_warnings.silence()

from .defs import pool_wait  # noqa: E402
from .defs.assets.ingestion import id_history, raw_events  # noqa: E402
from .defs.erasure import erasure_job  # noqa: E402
from .defs.executor import recorded_in_process_executor  # noqa: E402
from .defs.jobs import SNAPSHOT_ASSETS, ingestion_job, segmentation_job, snapshot_job  # noqa: E402
from .defs.partitions import SETTINGS  # noqa: E402
from .defs.resources import (  # noqa: E402
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)
from .defs.schedules import nightly_segmentation  # noqa: E402
from .defs.sensors import incoming_files, late_input_snapshots  # noqa: E402

# A step waiting for a pool slot sleeps and can be stopped (Dagster 1.13.28 spins; defs/pool_wait.py).
pool_wait.apply()

defs = dg.Definitions(
    assets=[raw_events, id_history, *SNAPSHOT_ASSETS],
    jobs=[segmentation_job, ingestion_job, snapshot_job, erasure_job],
    schedules=[nightly_segmentation],
    sensors=[incoming_files, late_input_snapshots],
    # Steps run in the run's own process: the graph is a chain, and a process per step would import
    # pandas, scikit-learn and matplotlib again for each of them (seconds a step on two cores). The
    # process records itself first, so that a run whose process dies can be found (defs/executor.py).
    executor=recorded_in_process_executor,
    resources={
        "warehouse": WarehouseResource(data_dir=str(SETTINGS.data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource.from_settings(SETTINGS),
        "llm": LLMResource.from_settings(SETTINGS),
        # Off unless SEGMENTATION_WEBHOOK_URL is set; the exports asset skips delivery while it is.
        "webhook": WebhookResource.from_settings(SETTINGS),
    },
)

# What is loaded by now (Dagster, pandas, pyarrow, DuckDB, scikit-learn and these definitions: some
# 230,000 objects) lives as long as the process. Set apart from the garbage collector, they are no
# longer walked by each of its full passes, which cost a run's steps about 0.5 s a snapshot at
# 100,000 customers (1.4 -> 0.3 s of collection over two snapshots, measured with gc.callbacks).
gc.freeze()
