"""`make instance`: create the Dagster instance in DAGSTER_HOME once, before any run can start.

On its default SQLite storage, the first process to open a new instance creates the
databases and records their schema version. Runs started together on a brand-new
DAGSTER_HOME each do that at the same moment, and the losers can leave the schema
recorded twice (alembic's "more than one head present"), after which every run and
`dagster instance migrate` fail. The same holds for the slots of a pool, which the
first step to use the pool makes: two runs making them together each add one, and
the pool then lets two steps through. So `make demo`, `make dev` and `make backfill`,
the demo itself and the test and benchmark harnesses call `prepare_instance` first;
a lock file makes two of these at once take turns.

An instance made by an older Dagster is not migrated here (a running daemon may be
using it): stop `make dev` and run `dagster instance migrate`, as Dagster's error
says.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from .core.settings import REPOSITORY_ROOT
from .defs.event_log import SegmentationInstance

#: Held while the instance is prepared, beside its dagster.yaml.
LOCK_FILE = ".prepare.lock"


def default_home() -> Path:
    """DAGSTER_HOME, or the repository's `.dagster_home` as `make` sets it."""
    return Path(os.environ.get("DAGSTER_HOME") or REPOSITORY_ROOT / ".dagster_home").expanduser().resolve()


def pools_of(assets: Iterable[object]) -> set[str]:
    """The pools the steps of these assets take slots of."""
    return {pool for asset in assets if isinstance(asset, dg.AssetsDefinition) for pool in asset.node_def.pools}


def prepare_instance(home: Path, pools: Iterable[str] = ()) -> dict[str, int | None]:
    """Create the instance's storage in `home` and, where dagster.yaml gives pools a default limit,
    the slots of `pools`; what exists already is left as it is.

    Returns each pool's slot count (None: the pool has no limit). A pool that already has slots
    keeps its limit (one raised with `dagster instance concurrency set` stays raised).
    """
    home.mkdir(parents=True, exist_ok=True)
    with (home / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # Opening each storage creates it: runs, event log (its index) and schedules.
            instance.get_runs(limit=1)
            instance.all_instigator_state()
            instance.get_latest_materialization_event(dg.AssetKey("raw_events"))
            events = instance.event_log_storage
            limited = events.get_concurrency_keys()
            if instance.get_concurrency_config().pool_config.default_pool_limit is not None:
                # As the first step to use a pool would, but once.
                for pool in sorted(set(pools) - limited):
                    events.initialize_concurrency_limit_to_default(pool)
                limited = events.get_concurrency_keys()
            return {
                pool: events.get_concurrency_info(pool).slot_count if pool in limited else None
                for pool in sorted(pools)
            }


def main() -> int:
    from .definitions import defs

    home = default_home()
    slots = prepare_instance(home, pools_of(defs.assets or ()))
    pools = ", ".join(f"{pool} {'no limit' if count is None else count}" for pool, count in slots.items())
    print(f"Dagster instance ready in {home} (pool slots: {pools or 'no pools'})")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        if not isinstance(instance, SegmentationInstance):
            print(
                f"  It stores each run event on its own, as Dagster's own instance does: {home / 'dagster.yaml'} "
                "names no instance_class. Copy the instance_class lines of the repository's "
                ".dagster_home/dagster.yaml there to store the events of a range of days together "
                "(a long history ingests several times faster; see benchmarks/README.md)."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
