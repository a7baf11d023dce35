"""The incoming-files sensor: new input in the file source's day folders launches its ingestion.

Each `<incoming>/events/date=YYYY-MM-DD/` (or `id_history/...`) folder whose
file set is new (a file added, replaced or removed) is ingested once: the
cursor keeps the fingerprint of every folder's last ingested file set, and the
run key carries the fingerprints, so even a lost cursor cannot launch the same
file set twice. Consecutive changed days go into one run over their range.
"""

import hashlib
import json
import time
from datetime import date, timedelta

import dagster as dg

from ..core.incoming import CONTRACTS, contiguous_ranges, days_to_ingest, scan_incoming
from ..core.ingestion import FileSourceSettings
from ..core.sources import FOLDER_SLACK_DAYS, Contract
from .assets.ingestion import id_history, raw_events
from .jobs import ingestion_job
from .partitions import SETTINGS, daily_partitions
from .resources import EventSourceResource, WarehouseResource

#: The asset each input table becomes (the contract's table is the asset of the same name).
_ASSETS = {asset.key.to_user_string(): asset.key for asset in (raw_events, id_history)}


@dg.sensor(
    name="incoming_files",
    job=ingestion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING if SETTINGS.source == "files" else dg.DefaultSensorStatus.STOPPED,
    description="Ingests a day when new files land in the file source's incoming folder "
    "(events/date=YYYY-MM-DD/ and id_history/date=YYYY-MM-DD/), once per new file set. "
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
    seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    first_day = daily_partitions.start.date()
    last_key = daily_partitions.get_last_partition_key()
    last_day = date.fromisoformat(last_key) if last_key else None
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
        if scan.unsettled():
            waiting.append(f"{table} folders still being written: {[d.isoformat() for d in scan.unsettled()]}")
        table_seen = seen.setdefault(table, {})
        changed = scan.changed(table_seen)
        # A folder of a day that has no partition yet (today) waits for it.
        future = [folder for folder in changed if last_day is None or folder.day > last_day]
        if future:
            waiting.append(f"{table} folders of days not yet ended: {[f.day.isoformat() for f in future]}")
        ready = [folder for folder in changed if folder not in future]
        if not ready:
            continue
        fingerprints = {folder.day: folder.fingerprint for folder in ready}
        days = [day for day in days_to_ingest(contract, fingerprints) if first_day <= day <= (last_day or day)]
        for first, last in contiguous_ranges(days):
            requests.append(_ingestion_request(contract, first, last, fingerprints))
        table_seen.update({day.isoformat(): fingerprint for day, fingerprint in fingerprints.items()})
    cursor = json.dumps(seen, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(waiting) or "no new files", cursor=cursor)


def _ingestion_request(contract: Contract, first: date, last: date, fingerprints: dict[date, str]) -> dg.RunRequest:
    """One run over the days a set of changed folders can alter; its key names those file sets."""
    reach = FOLDER_SLACK_DAYS
    included = sorted(
        f"{day}:{fingerprint}"
        for day, fingerprint in fingerprints.items()
        if (first - timedelta(days=reach)) <= day <= (last + timedelta(days=reach))
    )
    digest = hashlib.sha256("|".join(included).encode()).hexdigest()[:16]
    table = contract.spec.name
    tags = {"segmentation/trigger": "incoming_files"}
    if first == last:
        return dg.RunRequest(
            run_key=f"{table}:{first}:{digest}",
            asset_selection=[_ASSETS[table]],
            partition_key=first.isoformat(),
            tags=tags,
        )
    return dg.RunRequest(
        run_key=f"{table}:{first}..{last}:{digest}",
        asset_selection=[_ASSETS[table]],
        tags=tags
        | {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
