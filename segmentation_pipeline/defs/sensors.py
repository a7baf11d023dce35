"""The incoming-files sensor: new input in the file source's day folders launches its ingestion.

Each `<incoming>/events/date=YYYY-MM-DD/` (or `id_history/...`) folder with a
file added or replaced is ingested once: the cursor keeps the size and
modification time of every file of a folder as last ingested. A file removed
from a folder changes nothing (core.incoming keeps every ingested file).
Consecutive changed days go into one run over their range, whose run key names
the exact files it reads. core.incoming decides; this sensor asks Dagster.
"""

import json
import time
from datetime import date

import dagster as dg

from ..core.incoming import CONTRACTS, PlannedRun, plan_ingestion, scan_incoming
from ..core.ingestion import FileSourceSettings
from ..core.profiles import WindowInput
from ..core.schemas import RAW_EVENTS
from ..core.sources import Contract
from .assets.ingestion import id_history, raw_events
from .jobs import ingestion_job, snapshot_job
from .partitions import SETTINGS, daily_partitions, range_tags
from .resources import EventSourceResource, WarehouseResource

#: The asset each input table becomes (the contract's table is the asset of the same name).
_ASSETS = {asset.key.to_user_string(): asset.key for asset in (raw_events, id_history)}


@dg.sensor(
    name="incoming_files",
    job=ingestion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING if SETTINGS.source == "files" else dg.DefaultSensorStatus.STOPPED,
    description="Ingests a day when new files land in the file source's incoming folder "
    "(events/date=YYYY-MM-DD/ and id_history/date=YYYY-MM-DD/), once per new or replaced file; "
    "a file removed after ingestion (archived) leaves its rows stored. "
    "An events folder may hold rows of the days either side of it, so those days are ingested again too. "
    "Runs only with SEGMENTATION_SOURCE=files.",
)
def incoming_files(
    context: dg.SensorEvaluationContext, event_source: EventSourceResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    if event_source.kind != "files":
        return dg.SensorResult(skip_reason=f"the event source is {event_source.kind!r}, not 'files'")
    source = event_source.source(warehouse.warehouse().root)
    assert isinstance(source, FileSourceSettings)
    seen: dict[str, dict[str, str | dict[str, str]]] = json.loads(context.cursor) if context.cursor else {}
    first_day = daily_partitions.start.date()
    last_key = daily_partitions.get_last_partition_key()
    last_day = date.fromisoformat(last_key) if last_key else date.min
    requests: list[dg.RunRequest] = []
    waiting: list[str] = []
    for contract in CONTRACTS:
        table = contract.spec.name
        if source.path_for(contract):
            waiting.append(f"{table} comes from the configured path, not day folders: not watched")
            continue
        scan = scan_incoming(source.incoming_dir, contract, time.time())
        if scan.ignored:
            context.log.warning(
                f"{source.incoming_dir / contract.incoming_folder}: not date=YYYY-MM-DD folders, never ingested: "
                f"{scan.ignored[:10]}"
            )
        table_seen = seen.setdefault(table, {})
        plan = plan_ingestion(scan, contract, table_seen, first_day, last_day)
        waiting += plan.waiting
        if plan.outside:
            context.log.warning(
                f"{table} folders of days before the first partition ({first_day}), never ingested: "
                f"{[day.isoformat() for day in plan.outside]}"
            )
        for run in plan.runs:
            requests.append(_ingestion_request(contract, run))
        for day in [*plan.outside, *(day for run in plan.runs for day in run.changed)]:
            table_seen[day.isoformat()] = scan.folders[day].stamps
    cursor = json.dumps(seen, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(waiting) or "no new files", cursor=cursor)


def _ingestion_request(contract: Contract, run: PlannedRun) -> dg.RunRequest:
    """A day as a partition; consecutive days as one ranged run, as a single-run backfill launches it."""
    table = contract.spec.name
    single = run.first == run.last
    return dg.RunRequest(
        run_key=f"{table}:{run.key}",
        asset_selection=[_ASSETS[table]],
        partition_key=run.first.isoformat() if single else None,
        tags={"segmentation/trigger": "incoming_files"} | ({} if single else range_tags(run.first, run.last)),
    )


#: raw_events materializations read per evaluation; more wait for the next.
_MATERIALIZATIONS_PER_LOOK = 1000


@dg.sensor(
    name="late_input_snapshots",
    job=snapshot_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds a day's snapshot again (profiles through the report) when that day's raw_events were "
    "ingested again with other input after its snapshot was built: a late file. Later days' reports, whose "
    "windows hold that day, name it as changed until they are built again.",
)
def late_input_snapshots(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    store = warehouse.warehouse()
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=raw_events.key), limit=_MATERIALIZATIONS_PER_LOOK, cursor=context.cursor,
        ascending=True,
    )  # fmt: skip
    days = sorted({date.fromisoformat(record.partition_key) for record in found.records if record.partition_key})
    requests, busy = [], []
    for day in days:
        built_from = WindowInput.of_profiles(store, day)
        if built_from is None:
            continue  # no snapshot of the day yet (or one stored before profiles recorded their input)
        now = store.stored_footprints(RAW_EVENTS, [day]).get(day)
        if built_from.footprint(day) == now:
            continue
        if _run_in_progress(context.instance, day):
            # A run of the day (the nightly) is building it now, from the new input.
            busy.append(day.isoformat())
            continue
        rows, size = now or (0, 0)
        requests.append(
            dg.RunRequest(
                run_key=f"late_input:{day}:{rows}:{size}",
                partition_key=day.isoformat(),
                tags={"segmentation/trigger": "late_input_snapshots"},
            )
        )
    if busy:
        context.log.info(f"days being built by a run now, not asked again: {busy}")
    cursor = found.cursor if found.records else context.cursor
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="no snapshot built before its day's events changed", cursor=cursor)


def _run_in_progress(instance: dg.DagsterInstance, day: date) -> bool:
    runs = instance.get_run_records(
        filters=dg.RunsFilter(
            tags={"dagster/partition": day.isoformat()},
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                      dg.DagsterRunStatus.STARTED],
        ),
        limit=1,
    )  # fmt: skip
    return bool(runs)
