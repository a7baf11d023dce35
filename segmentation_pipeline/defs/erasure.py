"""The `erasure` job: customers erased from every file of the data folder (the right to be forgotten).

A thin wrapper around core.erasure, as `make erase` is; the job records the erasure on the instance.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from ..core.erasure import describe, erase, read_customer_ids
from .resources import EventSourceResource, IdentityRulesResource, WarehouseResource


class ErasureConfig(dg.Config):
    ids_file: str = Field(
        description="File of the customer IDs to erase, on this machine: one ID per line, or a CSV file with a "
        "customer_id column. Every ID merged with them is erased too."
    )


@dg.op(name="erase_customers")
def erase_customers(
    context: dg.OpExecutionContext,
    config: ErasureConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
    identity_rules: IdentityRulesResource,
) -> dg.Output[None]:
    """Remove the customers of the file, and every ID merged with them, from every stored table, kept input
    file and cached answer of every day; put them on the suppression list ingestion applies; log it."""
    store = warehouse.warehouse()
    result = erase(
        store,
        read_customer_ids(Path(config.ids_file)),
        event_source.source(store.root),
        identity_rules.resolver_settings(),
        progress=context.log.info,
    )
    for line in describe(result):
        context.log.info(line)
    run = result.run
    return dg.Output(
        None,
        metadata={
            "nothing_to_do": result.nothing_to_do,
            "ids_requested": run["ids_requested"],
            "ids_found": run["ids_found"],
            "ids_erased": run["ids_erased"],
            "rows_removed": dg.MetadataValue.json(run["rows_removed"]),
            "files_rewritten": run["files_rewritten"],
            "suppression_list_added": run["suppression_list_added"],
            "log": dg.MetadataValue.path(str(result.log_path)),
        },
    )


@dg.job(
    name="erasure",
    description="Erase customers (the right to be forgotten): their rows, and those of every ID merged with them, "
    "out of every stored table, kept input file and cached answer; ingestion drops them from then on. "
    "Config: ids_file. Run it when no other run is writing.",
    tags={"segmentation/erasure": "true"},
)
def erasure_job() -> None:
    erase_customers()
