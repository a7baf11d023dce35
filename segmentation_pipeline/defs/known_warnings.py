"""The warnings Dagster 1.13 gives about this project's definitions that are known and harmless.

They are silenced here, each by its class and message, when the definitions load
(segmentation_pipeline/definitions.py calls `silence`), so that `make demo` and
`make dev` print only what needs a reader. Any other warning still shows.
"""

import warnings

import dagster as dg

#: (category, start of the message, why it is harmless)
KNOWN: list[tuple[type[Warning], str, str]] = [
    (
        dg.BetaWarning,
        r"Parameter `backfill_policy` of function `asset` is currently in beta",
        # The single-run backfill policy of raw_events, id_history, merge_map, profiles and clusters is what
        # makes a backfill of a year one run instead of 365; its behaviour is pinned by the end-to-end tests.
        "single-run backfills of the ingestion and as-of chain",
    ),
    (
        UserWarning,
        r"Asset job \S+ materializes assets with varying BackfillPolicies",
        # The whole-graph jobs (segmentation, snapshot) mix single-run assets with one-day-a-run ones; Dagster
        # then launches a job backfill one run per day, which is what those jobs are for (a day's snapshot
        # follows the day before). Asset backfills (`make backfill`, the UI's Materialize) keep each
        # asset's own policy.
        "a job backfill of the whole graph runs one day a run",
    ),
]


def silence() -> None:
    """Ignore the known warnings (and only them) from now on in this process."""
    for category, message, _why in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
