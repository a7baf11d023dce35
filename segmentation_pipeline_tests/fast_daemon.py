"""`dagster-daemon` as it is, but looping every 2 seconds instead of 30.

Dagster's daemons (backfills among them) sleep a fixed 30 s between iterations
(`DEFAULT_DAEMON_INTERVAL_SECONDS`, not configurable). An asset backfill launches
the next day of a self-dependent asset one iteration after the previous day
materialized, so with 30 s a three-day backfill would keep the test waiting for
minutes. Everything else is the installed daemon.
"""

import sys

import dagster._daemon.controller as controller

controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 2

from dagster._daemon.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
