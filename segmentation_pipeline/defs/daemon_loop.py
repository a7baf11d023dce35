"""The instance of `.dagster_home/dagster.yaml`, whose daemon's backfill loop looks for work every few seconds.

Dagster 1.13's backfill daemon sleeps a fixed 30 s between iterations
(`dagster/_daemon/backfill.py`, `execute_backfill_iteration_loop`: `sleep_time =
max(0, DEFAULT_DAEMON_INTERVAL_SECONDS - loop_duration)`, the constant set to 30 in
`dagster/_daemon/controller.py`); no dagster.yaml setting changes it (`backfills:`
takes only `use_threads`, `num_workers` and `num_submit_workers`). An asset
backfill launches each wave of runs (the ranged ingestion run, then `clusters`
over the range, then the days after it) one iteration after the wave before it
has finished, so a backfill of three days spent most of its time asleep.

The daemon loads the instance named in dagster.yaml before it starts its loops,
so the instance class is where the interval can be set, for the daemon that
`dagster dev` (`make dev`) starts as for `dagster-daemon run`. Only the backfill
loop (and the auto-materialize daemon's default, pinned back to 30 s in
dagster.yaml) reads that constant. An iteration with no backfill in progress is one
query; one with a backfill of a few days takes well under a second (see
benchmarks/README.md), so a few seconds leaves the daemon mostly idle. A faster
loop set elsewhere (the tests' fast_daemon.py) is kept. On a Dagster release this
module was not checked on, the interval is Dagster's own (and a warning says so).
"""

import warnings

import dagster as dg
import dagster._daemon.controller as controller

from .event_log import PATCHED_DAGSTER, SegmentationInstance

#: Seconds between two looks of the backfill daemon for work (Dagster's own: 30).
BACKFILL_LOOP_SECONDS = 5


def apply(seconds: int = BACKFILL_LOOP_SECONDS) -> int:
    """Shorten the daemon loop to `seconds` (never lengthen it); the interval now in force."""
    if not dg.__version__.startswith(PATCHED_DAGSTER):
        warnings.warn(
            f"segmentation_pipeline.defs.daemon_loop was written for Dagster {PATCHED_DAGSTER}, not "
            f"{dg.__version__}: the backfill daemon keeps Dagster's own interval. Check whether "
            "DEFAULT_DAEMON_INTERVAL_SECONDS still paces dagster/_daemon/backfill.py, then update PATCHED_DAGSTER.",
            stacklevel=2,
        )
        return controller.DEFAULT_DAEMON_INTERVAL_SECONDS
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = min(controller.DEFAULT_DAEMON_INTERVAL_SECONDS, seconds)
    return controller.DEFAULT_DAEMON_INTERVAL_SECONDS


class FastBackfillInstance(SegmentationInstance):
    """SegmentationInstance (batched event writes) whose daemon's backfill loop runs every
    BACKFILL_LOOP_SECONDS instead of 30 (the daemon creates its loops after loading its instance)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        apply()
