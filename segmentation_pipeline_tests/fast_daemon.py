"""`dagster-daemon` as it is, but looping every 2 seconds instead of 30.

Dagster's backfill daemon sleeps a fixed 30 s between iterations
(`DEFAULT_DAEMON_INTERVAL_SECONDS`, no dagster.yaml setting); the repository's
instance class makes it 5 s (segmentation_pipeline/defs/daemon_loop.py, which
keeps a shorter loop set before it). An asset backfill launches each wave of runs
one iteration after the wave before it, so the tests, which wait on many
backfills, take 2 s: a loop that busy is not worth it outside tests. Everything
else is the installed daemon.
"""

import sys

import dagster._daemon.controller as controller

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 2

from dagster._daemon.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
