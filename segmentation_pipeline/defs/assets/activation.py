"""audiences and audience_exports: the segments' campaigns leave the engine, with a control group kept back."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from ...core import activation
from ...core.campaign_results import measured_campaign_uplifts
from ...core.schemas import (
    ACTIONABILITY,
    AUDIENCE_EXPORTS,
    AUDIENCES,
    CLUSTERS,
    EXPLANATIONS,
    MERGE_MAP,
    PROFILES,
    SEGMENTS,
    TABLES,
    VIABILITY,
)
from ...core.viability import CampaignEconomics
from ...core.warehouse import Warehouse, file_sha256
from ...core.webhook import deliver_changes
from ..checks import check_spec
from ..metadata import column_schema, counts_table, preview
from ..partitions import daily_partitions, partition_day
from ..resources import EventSourceResource, WarehouseResource, WebhookResource
from .identity import merge_map
from .insights import actionability, explanations
from .profiles import profiles
from .segmentation import clusters, viability

_DEFAULTS = activation.AudienceSettings()


class AudiencesConfig(dg.Config):
    control_share: float = Field(
        default=_DEFAULTS.control_share,
        description="Share of each campaign's customers kept back as its control group (0.10 = 10%), chosen by a "
        "hash of customer and campaign: the same customers day after day.",
    )
    exclusivity: str = Field(
        default=_DEFAULTS.exclusivity,
        description="Which campaign a customer who qualifies for several is in: 'expected_value' (the highest "
        "expected extra spend; ties to the segment's first recommendation) or 'first_recommendation'.",
    )
    prior_uplift: float = Field(
        default=CampaignEconomics().expected_uplift,
        description="Uplift assumed for a campaign whose uplift has not been measured (0.10 = +10%).",
    )

    def settings(self) -> activation.AudienceSettings:
        return activation.AudienceSettings(self.control_share, self.exclusivity, self.prior_uplift)


_SUPPRESSION_CHECK = "suppression_file_is_clean"


@dg.asset(
    partitions_def=daily_partitions,
    deps=[explanations, actionability, viability, clusters, profiles, merge_map],
    group_name="activation",
    kinds={"parquet"},
    check_specs=[
        check_spec(
            _SUPPRESSION_CHECK,
            asset="audiences",
            description="Every line of the suppression file names a customer the engine knows, with a reason "
            "(a line that cannot be read, or an ID never seen, may be a typo that leaves a customer reachable).",
        )
    ],
    metadata={"dagster/column_schema": column_schema(AUDIENCES)},
)
def audiences(
    context: dg.AssetExecutionContext,
    config: AudiencesConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
) -> dg.MaterializeResult:
    """The customers of every campaign of an approved and actionable segment, in a treatment or a control group.

    One row per customer in a campaign; a customer is in one campaign at most. Suppressed customers
    (the suppression file of the source settings) never appear; consent columns of the customer-attributes
    file limit channels. See core/activation.py for every rule.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    profile_table = store.read_required(PROFILES, as_of)
    campaigns = activation.campaigns_of(
        store.read_required(SEGMENTS, as_of),
        store.read_required(VIABILITY, as_of),
        store.read_required(ACTIONABILITY, as_of),
        store.read_required(EXPLANATIONS, as_of),
    )
    ids = _merge_map(store, as_of)
    suppression_path = event_source.suppression_file(store.root)
    suppressions = (
        activation.read_suppressions(
            suppression_path, ids, set(profile_table["canonical_id"].to_pylist())
        )
        if suppression_path
        else activation.Suppressions.none()
    )
    attributes = _attributes(store, event_source, as_of, ids)
    # A campaign measured before weighs in at its measured uplift when a customer qualifies for several.
    measured = measured_campaign_uplifts(store, as_of, CampaignEconomics().min_control_customers)
    result = activation.build_audiences(
        profile_table,
        store.read_required(CLUSTERS, as_of),
        campaigns,
        config.settings(),
        suppressions,
        attributes,
        uplifts=measured,
    )
    written = store.write_partition(AUDIENCES, as_of, result.table)
    store.refresh_catalog(TABLES.values())
    groups = dict(zip(*pc.value_counts(result.table["group"]).flatten())) if result.table.num_rows else {}
    if suppressions.unknown_ids or suppressions.problems:
        context.log.warning(
            f"suppression file {suppression_path}: {len(suppressions.problems)} lines could not be read, "
            f"{len(suppressions.unknown_ids)} IDs are not known customers"
        )
    clean = not suppressions.unknown_ids and not suppressions.problems
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.table.num_rows,
            "campaigns": [campaign.key for campaign in result.campaigns],
            "treatment_customers": int(groups.get(activation.TREATMENT, 0)),
            "control_customers": int(groups.get(activation.CONTROL, 0)),
            "control_share": config.control_share,
            "exclusivity": config.exclusivity,
            "campaigns_at_measured_uplift": dg.MetadataValue.json(
                {key: round(value, 4) for key, value in measured.items() if key in {c.key for c in result.campaigns}}
            ),
            "customers_in_several_campaigns": result.contested,
            "group_balance": dg.MetadataValue.json(result.balance),
            "suppressed_customers": counts_table(result.suppressed, "reason", "customers"),
            "left_out_without_consent": counts_table(result.without_consent, "channel", "customers"),
            "suppression_file": str(suppression_path) if suppression_path else "none",
            "path": dg.MetadataValue.path(str(written.path)),
            "preview": preview(result.table.select(["canonical_id", "campaign_key", "group", "expected_value"]), 20),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=_SUPPRESSION_CHECK,
                passed=clean,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    "every line names a known customer with a reason"
                    if clean
                    else f"{len(suppressions.problems)} lines could not be read; "
                    f"{len(suppressions.unknown_ids)} IDs are not customers the engine has seen"
                ),
                metadata={
                    "unreadable_lines": dg.MetadataValue.md("\n".join(f"- {line}" for line in suppressions.problems[:50]) or "none"),
                    "unknown_ids": len(suppressions.unknown_ids),
                },
            )
        ],
    )


class AudienceExportsConfig(dg.Config):
    hash_identifiers: bool = Field(
        default=True,
        description="Write e-mail and phone from the customer-attributes file only as SHA-256 of their normalised "
        "form, as ad platforms match them; off writes them as they are.",
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[audiences],
    group_name="activation",
    kinds={"parquet", "csv"},
    metadata={"dagster/column_schema": column_schema(AUDIENCE_EXPORTS)},
)
def audience_exports(
    context: dg.AssetExecutionContext,
    config: AudienceExportsConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
    webhook: WebhookResource,
) -> dg.MaterializeResult:
    """Each campaign's audience and its changes since the previous export, as files a campaign tool loads.

    Under <data dir>/exports/date=YYYY-MM-DD/<campaign>/: audience.csv|parquet (the treatment group)
    and changes.csv|parquet (added, removed, moved_in, moved_out), with manifest.json (counts and the
    SHA-256 of every file) written last and the folder published in one step: a sync reads a
    complete export or the previous one. With the webhook on (SEGMENTATION_WEBHOOK_URL), each
    campaign's changes are then posted to it in signed batches, none twice (core/webhook.py).
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    audience = store.read_required(AUDIENCES, as_of)
    attributes = _attributes(store, event_source, as_of)
    exported = activation.export_audiences(store.root, as_of, audience, attributes, config.hash_identifiers)
    table = _exports_table(exported)
    written = store.write_partition(AUDIENCE_EXPORTS, as_of, table)
    store.refresh_catalog(TABLES.values())
    delivered = _deliver(context, webhook, store, exported)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": table.num_rows,
            "folder": dg.MetadataValue.path(str(exported.folder)),
            "previous_export": exported.previous_day.isoformat() if exported.previous_day else "none",
            "exported_customers": int(pc.sum(table["customers"]).as_py() or 0),
            "control_customers_kept_back": int(pc.sum(table["control_customers"]).as_py() or 0),
            "identifiers_hashed": config.hash_identifiers,
            "campaigns": preview(table.drop_columns(["folder", "manifest_sha256"]), 50),
            "path": dg.MetadataValue.path(str(written.path)),
            **delivered,
        }
    )


def _deliver(
    context: dg.AssetExecutionContext, webhook: WebhookResource, store: Warehouse, exported: activation.ExportResult
) -> dict[str, object]:
    """Post every campaign's changes of the export to the webhook, if one is configured; what was delivered."""
    settings = webhook.settings()
    if settings is None:
        return {"webhook": "off"}
    reports = {}
    for item in exported.campaigns:
        changes = pq.read_table(exported.folder / item.key / "changes.parquet").to_pylist()
        report = deliver_changes(
            settings, activation.exports_root(store.root), exported.folder.name.removeprefix("date="), item.key, changes
        )
        context.log.info(
            f"webhook {item.key}: {report.batches_sent} batches sent, {report.batches_skipped} already delivered"
        )
        reports[item.key] = report.as_metadata()
    return {"webhook": "on", "webhook_deliveries": dg.MetadataValue.json(reports)}


def _exports_table(exported: activation.ExportResult) -> pa.Table:
    manifest_sha256 = file_sha256(exported.folder / activation.MANIFEST)
    rows = [
        {
            "campaign_key": item.key,
            "customers": item.customers,
            "control_customers": item.control,
            "added": item.added,
            "removed": item.removed,
            "moved_in": item.moved_in,
            "moved_out": item.moved_out,
            "previous_export": exported.previous_day,
            "folder": str(Path(exported.folder) / item.key),
            "manifest_sha256": manifest_sha256,
        }
        for item in exported.campaigns
    ]
    return pa.Table.from_pylist(rows, schema=AUDIENCE_EXPORTS.schema)


def _attributes(
    store: Warehouse, event_source: EventSourceResource, as_of, ids: pa.Table | None = None
) -> pa.Table | None:
    """The customer-attributes file of the source settings under the day's canonical IDs; None without one.
    The merge map is read only when there is a file (`ids`: already read)."""
    path = event_source.attributes_file(store.root)
    if path is None:
        return None
    return activation.read_attributes(path, ids if ids is not None else _merge_map(store, as_of))


def _merge_map(store: Warehouse, as_of) -> pa.Table | None:
    """The day's merge map, to resolve the IDs of the suppression and attributes files; None before there is one."""
    path = store.partition_path(MERGE_MAP, as_of)
    return store.read_partition(MERGE_MAP, as_of) if path.exists() else None
