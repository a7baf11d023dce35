"""Audiences: the customers of every campaign, in a treatment or a control group, and their export.

Campaigns
    Every recommendation (channel, timing, offer) of a segment that viability
    approved and actionability judged actionable is a campaign. Its key,
    "<segment ID>-<channel>" (e.g. "S06-email"), stays the same from day to day
    while the segment keeps its ID, so a campaign tool syncs one list per key.

Who is in which campaign
    Each customer of such a segment qualifies for the segment's campaigns whose
    channel they may be reached on: a customer-attributes file with a
    `consent_<channel>` column limits that channel to the customers whose value
    is true. A customer is in one campaign only (never in two campaigns'
    treatment groups): with `exclusivity` "expected_value" (the default), the
    one where their expected extra spend, cycle value x the campaign's uplift,
    is highest, ties to the segment's first recommendation; with
    "first_recommendation", the first their consent allows.

Control group
    A customer is in the control group of their campaign when
    SHA-256("<campaign key>|<customer ID>"), its first 8 bytes read as a number in
    [0, 1), is below `control_share` (default 0.10): the same customer stays in
    the same group from day to day, any run gives the same split, and the share
    holds for every campaign. Control customers are never exported; the uplift is
    measured against them.

Suppression
    A suppression file (CSV: customer_id, reason, e.g. unsubscribed, no_consent,
    erased) is applied before anything is exported: an ID suppresses its
    canonical customer (through the day's merge map) and every ID merged with
    it. Suppressed customers are counted per reason and never appear in an
    audience. Lines without an ID or a reason, and IDs the engine has never seen,
    are reported, never silently dropped.

Exports
    Per campaign, under `<data dir>/exports/date=D/<campaign key>/`: the
    treatment group (`audience.csv`, `audience.parquet`) and the changes since the
    previous complete export (`changes.csv`, `changes.parquet`: added, removed,
    moved_in from another campaign, moved_out to another); a campaign of the
    previous export that has no audience now gets a folder of removals only.
    `manifest.json` (counts, SHA-256 of every file, schema version, the snapshot
    and previous export it came from) is written last, and the day's folder is
    published in one rename (core.versions): a reader sees a complete export or
    the previous one. Identifiers from the attributes file (email, phone) are
    normalised (email: trimmed, lower case; phone: digits, with a leading + kept)
    and written only as SHA-256 hex when hashing is on (the default), as ad
    platforms match them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DataValidationError
from .versions import fsync_file, publish_version
from .warehouse import file_sha256

TREATMENT, CONTROL = "treatment", "control"
EXCLUSIVITY_RULES = ("expected_value", "first_recommendation")
#: Version of the export layout and columns; a downstream sync checks it.
EXPORT_SCHEMA_VERSION = "1"
MANIFEST = "manifest.json"
ADDED, REMOVED, MOVED_IN, MOVED_OUT = "added", "removed", "moved_in", "moved_out"
IDENTIFIERS = ("email", "phone")


@dataclass(frozen=True)
class Campaign:
    key: str
    segment_id: str
    segment_name: str
    channel: str
    timing: str
    offer: str
    #: Order of the recommendation within its segment (0 first).
    rank: int


def campaign_key(segment_id: str, channel: str) -> str:
    """'S06-email': the segment and its channel, in characters safe for a folder name."""
    slug = re.sub(r"[^a-z0-9]+", "_", channel.lower()).strip("_") or "channel"
    return f"{segment_id}-{slug}"


def campaigns_of(segments: pa.Table, viability: pa.Table, actionability: pa.Table, explanations: pa.Table) -> list[Campaign]:
    """The campaigns of the snapshot: each recommendation of a segment both approved and actionable."""
    names = dict(zip(segments["segment_id"].to_pylist(), segments["name"].to_pylist()))
    approved = {row["segment_id"] for row in viability.select(["segment_id", "approved"]).to_pylist() if row["approved"]}
    actionable = {
        row["segment_id"] for row in actionability.select(["segment_id", "actionable"]).to_pylist() if row["actionable"]
    }
    campaigns: list[Campaign] = []
    for row in explanations.select(["segment_id", "recommendations"]).to_pylist():
        segment_id = row["segment_id"]
        if segment_id not in approved or segment_id not in actionable or segment_id not in names:
            continue
        seen: set[str] = set()
        for rank, recommendation in enumerate(row["recommendations"] or []):
            key = campaign_key(segment_id, recommendation["channel"])
            if key in seen:
                continue
            seen.add(key)
            campaigns.append(
                Campaign(
                    key,
                    segment_id,
                    names[segment_id],
                    recommendation["channel"],
                    recommendation["timing"],
                    recommendation["offer"],
                    rank,
                )
            )
    return sorted(campaigns, key=lambda campaign: (campaign.segment_id, campaign.rank))


def control_draws(customer_ids: list[str], key: str) -> np.ndarray:
    """Each customer's draw in [0, 1) for the campaign `key`: the first 8 bytes of SHA-256("key|id") / 2**64."""
    prefix = f"{key}|".encode()
    return np.array(
        [int.from_bytes(hashlib.sha256(prefix + customer.encode()).digest()[:8], "big") / 2**64 for customer in customer_ids],
        dtype=np.float64,
    )


# ---------------------------------------------------------------- suppression and attributes


@dataclass(frozen=True)
class Suppressions:
    #: Canonical customer -> the reason (the first listed for them).
    customers: dict[str, str]
    #: Reason -> canonical customers suppressed for it.
    counts: dict[str, int]
    #: IDs listed that the engine has never seen (no event, no merge).
    unknown_ids: list[str]
    #: "line N: what is wrong" for each line that could not be read.
    problems: list[str]

    @classmethod
    def none(cls) -> Suppressions:
        return cls({}, {}, [], [])


def canonical_ids(merge_map: pa.Table | None) -> dict[str, str]:
    """old ID -> canonical ID of a merge map (none without one)."""
    if merge_map is None:
        return {}
    return dict(zip(merge_map["old_id"].to_pylist(), merge_map["canonical_id"].to_pylist()))


def read_suppressions(path: Path, merge_map: pa.Table | None, known_ids: set[str]) -> Suppressions:
    """The suppression file (CSV with a header: customer_id, reason) resolved to canonical customers.

    An ID counts for its canonical customer through `merge_map` (old_id -> canonical_id); an ID that is
    neither in the merge map nor among `known_ids` (the profiled customers) is reported as unknown."""
    if not path.is_file():
        raise DataValidationError(f"suppression file {path} does not exist; fix suppression_path in the source settings")
    canonical = canonical_ids(merge_map)
    customers: dict[str, str] = {}
    unknown: list[str] = []
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [cell.strip().lower() for cell in next(reader, [])]
        if "customer_id" not in header or "reason" not in header:
            raise DataValidationError(
                f"suppression file {path}: the header must name customer_id and reason, found {header}"
            )
        id_at, reason_at = header.index("customer_id"), header.index("reason")
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                problems.append(f"line {number}: {len(cells)} fields, expected {len(header)}")
                continue
            customer, reason = cells[id_at].strip(), cells[reason_at].strip().lower()
            if not customer or not reason:
                problems.append(f"line {number}: {'no customer_id' if not customer else 'no reason'}")
                continue
            resolved = canonical.get(customer, customer)
            if customer not in canonical and customer not in known_ids:
                unknown.append(customer)
            customers.setdefault(resolved, reason)
    counts = Counter(customers.values())
    return Suppressions(customers, dict(sorted(counts.items())), unknown, problems)


def read_attributes(path: Path, merge_map: pa.Table | None) -> pa.Table:
    """The customer-attributes file (CSV or Parquet with customer_id; optional email, phone, consent_<channel>),
    one row per canonical customer (the last row listed wins)."""
    if not path.is_file():
        raise DataValidationError(
            f"customer-attributes file {path} does not exist; fix customer_attributes_path in the source settings"
        )
    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    else:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"customer_id": pa.string(),
                                                                                        "phone": pa.string()}))
    if "customer_id" not in table.column_names:
        raise DataValidationError(f"customer-attributes file {path} has no customer_id column: {table.column_names}")
    frame = table.to_pandas()
    frame["customer_id"] = frame["customer_id"].astype(str).str.strip()
    canonical = canonical_ids(merge_map)
    if canonical:
        frame["customer_id"] = frame["customer_id"].map(lambda value: canonical.get(value, value))
    frame = frame.drop_duplicates("customer_id", keep="last").rename(columns={"customer_id": "canonical_id"})
    for column in [name for name in frame.columns if name.startswith("consent_")]:
        frame[column] = frame[column].map(_truthy)
    return pa.Table.from_pandas(frame, preserve_index=False)


def _truthy(value: object) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return str(value).strip().lower() in {"1", "true", "yes", "y", "t"}


def normalised_email(value: str) -> str:
    return value.strip().lower()


def normalised_phone(value: str) -> str:
    text = value.strip()
    digits = re.sub(r"\D", "", text)
    return f"+{digits}" if text.startswith("+") else digits


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- audiences


@dataclass(frozen=True)
class AudienceSettings:
    control_share: float = 0.10
    exclusivity: str = "expected_value"
    #: The uplift a campaign is assumed to have where none was measured (viability's expected_uplift).
    prior_uplift: float = 0.10

    def __post_init__(self) -> None:
        if not 0 <= self.control_share < 1:
            raise DataValidationError(f"control_share must lie in [0, 1), got {self.control_share}")
        if self.exclusivity not in EXCLUSIVITY_RULES:
            raise DataValidationError(f"exclusivity {self.exclusivity!r} is not one of {list(EXCLUSIVITY_RULES)}")


@dataclass(frozen=True)
class Audiences:
    table: pa.Table
    campaigns: list[Campaign]
    suppressed: dict[str, int]
    #: Channel -> customers of an eligible segment left out of that channel's campaign for want of consent.
    without_consent: dict[str, int]
    #: Customers who qualified for more than one campaign (each is in one only).
    contested: int
    #: Campaign key -> {group -> {"customers", "mean_clv", "mean_churn_risk", "mean_recency_days"}}.
    balance: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


AUDIENCE_COLUMNS = (
    "canonical_id",
    "segment_id",
    "segment_name",
    "campaign_key",
    "channel",
    "timing",
    "offer",
    "lifecycle_stage",
    "clv_estimate",
    "churn_risk",
    "recency_days",
    "cycle_value",
    "expected_value",
    "group",
)


def build_audiences(
    profiles: pa.Table,
    assignments: pa.Table,
    campaigns: list[Campaign],
    settings: AudienceSettings,
    suppressions: Suppressions | None = None,
    attributes: pa.Table | None = None,
    uplifts: dict[str, float] | None = None,
) -> Audiences:
    """One row per customer in a campaign (see the module docstring), by campaign, then in the profiles'
    order (the stored profiles are sorted by customer ID).

    Column arrays throughout, a segment at a time: at a million customers, sorting and grouping
    their IDs as pandas strings took 9 s of 9.3."""
    suppressions = suppressions or Suppressions.none()
    uplifts = uplifts or {}
    columns = ["canonical_id", "lifecycle_stage", "clv_estimate", "churn_risk", "recency_days", "cycle_value"]
    table = profiles.select(columns)
    if assignments["canonical_id"].equals(profiles["canonical_id"]):
        # clusters stores its assignments in the profiles' order (by customer ID): no join.
        table = table.append_column("segment_id", assignments["segment_id"])
    else:
        table = table.join(assignments.select(["canonical_id", "segment_id"]), "canonical_id", join_type="inner")
        table = table.take(pc.sort_indices(table, [("canonical_id", "ascending")]))
    ids = table["canonical_id"]
    reasons = _looked_up(ids, suppressions.customers)
    suppressed = pc.is_valid(reasons).to_numpy(zero_copy_only=False)
    counts = Counter(pc.drop_null(reasons).to_pylist())
    cycle_value = pc.fill_null(table["cycle_value"], 0.0).to_numpy(zero_copy_only=False).astype(float)
    segment_of = table["segment_id"].to_numpy(zero_copy_only=False)
    without_consent: Counter[str] = Counter()
    chosen: dict[str, np.ndarray] = {}
    contested = 0
    by_segment: dict[str, list[Campaign]] = {}
    for campaign in campaigns:
        by_segment.setdefault(campaign.segment_id, []).append(campaign)
    for segment_id, own in by_segment.items():
        own = sorted(own, key=lambda campaign: campaign.rank)
        rows = np.flatnonzero((segment_of == segment_id) & ~suppressed)
        allowed = np.ones((len(rows), len(own)), dtype=bool)
        for column, campaign in enumerate(own):
            consent = _consent(attributes, ids, campaign.channel)
            if consent is not None:
                allowed[:, column] = consent[rows]
                without_consent[campaign.channel] += int((~consent[rows]).sum())
        if settings.exclusivity == "first_recommendation":
            pick = np.argmax(allowed, axis=1)
        else:
            worth = np.array([uplifts.get(campaign.key, settings.prior_uplift) for campaign in own])
            # argmax takes the first of equal values: ties go to the segment's first recommendation.
            pick = np.argmax(np.where(allowed, cycle_value[rows, None] * worth[None, :], -np.inf), axis=1)
        reachable = allowed.any(axis=1)
        contested += int((allowed.sum(axis=1) > 1).sum())
        for column, campaign in enumerate(own):
            chosen[campaign.key] = rows[reachable & (pick == column)]
    parts = []
    by_key = {campaign.key: campaign for campaign in campaigns}
    for key in sorted(chosen):
        rows = chosen[key]
        if not len(rows):
            continue
        campaign = by_key[key]
        part = table.take(pa.array(rows))
        draws = control_draws(part["canonical_id"].to_pylist(), key)
        uplift = uplifts.get(key, settings.prior_uplift)
        n = len(rows)
        parts.append(
            pa.table(
                {
                    "canonical_id": part["canonical_id"],
                    "segment_id": part["segment_id"],
                    "segment_name": pa.array([campaign.segment_name] * n, pa.string()),
                    "campaign_key": pa.array([key] * n, pa.string()),
                    "channel": pa.array([campaign.channel] * n, pa.string()),
                    "timing": pa.array([campaign.timing] * n, pa.string()),
                    "offer": pa.array([campaign.offer] * n, pa.string()),
                    "lifecycle_stage": part["lifecycle_stage"],
                    "clv_estimate": part["clv_estimate"],
                    "churn_risk": part["churn_risk"],
                    "recency_days": part["recency_days"],
                    "cycle_value": part["cycle_value"],
                    "expected_value": pa.array(cycle_value[rows] * uplift),
                    "group": pa.array(np.where(draws < settings.control_share, CONTROL, TREATMENT), pa.string()),
                }
            )
        )
    result = pa.concat_tables(parts) if parts else _empty_audience()
    used = [campaign for campaign in campaigns if len(chosen.get(campaign.key, ())) > 0]
    return Audiences(result, used, dict(sorted(counts.items())), dict(without_consent), contested, _balance(result))


def _looked_up(ids: pa.ChunkedArray, values: dict[str, str]) -> pa.Array:
    """values[id] for every ID, null where it has none."""
    if not values:
        return pa.nulls(len(ids), pa.string())
    keys = pa.array(list(values), pa.string())
    positions = pc.index_in(ids, value_set=keys)
    return pc.take(pa.array(list(values.values()), pa.string()), positions)


def _consent(attributes: pa.Table | None, ids: pa.ChunkedArray, channel: str) -> np.ndarray | None:
    """Whether each customer consents to `channel`; None when the attributes have no column for it."""
    column = f"consent_{channel.lower()}"
    if attributes is None or column not in attributes.column_names:
        return None
    positions = pc.index_in(ids, value_set=attributes["canonical_id"].combine_chunks())
    given = pc.take(attributes[column].combine_chunks(), positions)
    return pc.fill_null(given, False).to_numpy(zero_copy_only=False).astype(bool)


def _empty_audience() -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in AUDIENCE_COLUMNS}).cast(
        pa.schema(
            [
                pa.field(name, pa.float64() if name in _NUMBERS else pa.string())
                for name in AUDIENCE_COLUMNS
            ]
        )
    )


_NUMBERS = {"clv_estimate", "churn_risk", "recency_days", "cycle_value", "expected_value"}


def _balance(audiences: pa.Table) -> dict[str, dict[str, dict[str, float]]]:
    """Per campaign and group: customers, and mean CLV, churn risk and recency (both groups should match)."""
    balance: dict[str, dict[str, dict[str, float]]] = {}
    if audiences.num_rows == 0:
        return balance
    grouped = audiences.group_by(["campaign_key", "group"]).aggregate(
        [
            ([], "count_all"),
            ("clv_estimate", "mean"),
            ("churn_risk", "mean"),
            ("recency_days", "mean"),
        ]
    )
    for row in grouped.to_pylist():
        recency = row["recency_days_mean"]
        balance.setdefault(row["campaign_key"], {})[row["group"]] = {
            "customers": int(row["count_all"]),
            "mean_clv": round(float(row["clv_estimate_mean"] or 0.0), 2),
            "mean_churn_risk": round(float(row["churn_risk_mean"] or 0.0), 4),
            "mean_recency_days": round(float(recency), 1) if recency is not None else None,
        }
    return dict(sorted((key, dict(sorted(groups.items()))) for key, groups in balance.items()))


# ---------------------------------------------------------------- exports


@dataclass(frozen=True)
class CampaignExport:
    key: str
    customers: int
    control: int
    added: int
    removed: int
    moved_in: int
    moved_out: int
    files: dict[str, str]


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    previous_day: date | None
    campaigns: list[CampaignExport]
    manifest: dict[str, object]


def exports_root(data_dir: Path) -> Path:
    return data_dir / "exports"


def export_folder(data_dir: Path, day: date) -> Path:
    return exports_root(data_dir) / f"date={day.isoformat()}"


def complete_export_days(data_dir: Path, before: date | None = None) -> list[date]:
    """Days with a complete export (a manifest in the published folder), oldest first."""
    days = []
    for folder in exports_root(data_dir).glob("date=*"):
        try:
            day = date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        if (folder / MANIFEST).is_file() and (before is None or day < before):
            days.append(day)
    return sorted(days)


def exported_lists(folder: Path) -> dict[str, set[str]]:
    """Campaign key -> the customers its audience held in an export folder."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    lists = {}
    for entry in manifest["campaigns"]:
        table = pq.read_table(folder / entry["key"] / "audience.parquet", columns=["customer_id"])
        lists[entry["key"]] = set(table["customer_id"].to_pylist())
    return lists


def export_audiences(
    data_dir: Path,
    day: date,
    audiences: pa.Table,
    attributes: pa.Table | None = None,
    hash_identifiers: bool = True,
) -> ExportResult:
    """Write the day's export (see the module docstring) and publish it in one step."""
    previous_days = complete_export_days(data_dir, before=day)
    previous_day = previous_days[-1] if previous_days else None
    # A campaign of the previous export gets a folder of removals once, not forever after.
    before = (
        {key: customers for key, customers in exported_lists(export_folder(data_dir, previous_day)).items() if customers}
        if previous_day
        else {}
    )
    treated = audiences.filter(pc.equal(audiences["group"], TREATMENT)).to_pandas()
    controls = Counter(audiences.filter(pc.equal(audiences["group"], CONTROL))["campaign_key"].to_pylist())
    now = {key: set(rows["canonical_id"]) for key, rows in treated.groupby("campaign_key")}
    where_before = {customer: key for key, customers in before.items() for customer in customers}
    where_now = {customer: key for key, customers in now.items() for customer in customers}
    identifiers = _identifiers(attributes, hash_identifiers)

    def write(version: Path) -> tuple[list[CampaignExport], dict[str, object]]:
        exports = []
        for key in sorted(set(now) | set(before)):
            rows = treated[treated["campaign_key"] == key]
            audience = _audience_frame(rows, identifiers)
            changes = _changes(key, now.get(key, set()), before.get(key, set()), where_now, where_before)
            files: dict[str, str] = {}
            for name, frame in (("audience", audience), ("changes", changes)):
                _write_list(version, key, name, pa.Table.from_pandas(frame, preserve_index=False), files)
            counted = Counter(changes["change"])
            exports.append(
                CampaignExport(
                    key,
                    len(audience),
                    controls.get(key, 0),
                    counted[ADDED],
                    counted[REMOVED],
                    counted[MOVED_IN],
                    counted[MOVED_OUT],
                    files,
                )
            )
        manifest = {
            "schema_version": EXPORT_SCHEMA_VERSION,
            "snapshot": day.isoformat(),
            "previous_export": previous_day.isoformat() if previous_day else None,
            "identifiers_hashed": hash_identifiers,
            "campaigns": [
                {
                    "key": item.key,
                    "customers": item.customers,
                    "control_customers": item.control,
                    "added": item.added,
                    "removed": item.removed,
                    "moved_in": item.moved_in,
                    "moved_out": item.moved_out,
                }
                for item in exports
            ],
            "files": {name: digest for item in exports for name, digest in sorted(item.files.items())},
        }
        _write_manifest(version, manifest)
        return exports, manifest

    folder = export_folder(data_dir, day)
    exports, manifest = publish_version(folder, write)
    return ExportResult(folder, previous_day, exports, manifest)


def _identifiers(attributes: pa.Table | None, hashed: bool) -> pd.DataFrame | None:
    if attributes is None:
        return None
    frame = attributes.to_pandas()
    present = [name for name in IDENTIFIERS if name in frame.columns]
    if not present:
        return None
    out = frame[["canonical_id"]].copy()
    normalise = {"email": normalised_email, "phone": normalised_phone}
    for name in present:
        values = frame[name].map(lambda value, name=name: normalise[name](str(value)) if pd.notna(value) and str(value).strip() else None)
        if hashed:
            out[f"{name}_sha256"] = values.map(lambda value: sha256_hex(value) if value else None)
        else:
            out[name] = values
    return out.set_index("canonical_id")


def _audience_frame(rows: pd.DataFrame, identifiers: pd.DataFrame | None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": rows["canonical_id"].astype(str).to_numpy(),
            "segment_id": rows["segment_id"].astype(str).to_numpy(),
            "campaign_key": rows["campaign_key"].astype(str).to_numpy(),
            "channel": rows["channel"].astype(str).to_numpy(),
            "lifecycle_stage": rows["lifecycle_stage"].astype(str).to_numpy(),
            "clv_estimate": rows["clv_estimate"].astype(float).round(2).to_numpy(),
            "churn_risk": rows["churn_risk"].astype(float).round(4).to_numpy(),
        }
    )
    if identifiers is not None:
        joined = identifiers.reindex(frame["customer_id"])
        for column in identifiers.columns:
            frame[column] = joined[column].to_numpy()
    # The audiences table is in customer order within each campaign already.
    return frame.reset_index(drop=True)


def _changes(
    key: str, now: set[str], before: set[str], where_now: dict[str, str], where_before: dict[str, str]
) -> pd.DataFrame:
    rows = []
    for customer in sorted(now - before):
        previous = where_before.get(customer)
        rows.append((customer, MOVED_IN if previous else ADDED, previous))
    for customer in sorted(before - now):
        current = where_now.get(customer)
        rows.append((customer, MOVED_OUT if current else REMOVED, current))
    frame = pd.DataFrame(rows, columns=["customer_id", "change", "other_campaign"])
    return frame.astype({"customer_id": "string", "change": "string", "other_campaign": "string"})


def _write_list(version: Path, key: str, name: str, table: pa.Table, files: dict[str, str]) -> None:
    """One list of a campaign (`audience` or `changes`) as Parquet and CSV, flushed; each file's SHA-256
    recorded in `files` under its path in the export."""
    folder = version / key
    folder.mkdir(exist_ok=True)
    pq.write_table(table, folder / f"{name}.parquet", compression="zstd")
    pacsv.write_csv(table, folder / f"{name}.csv")
    for suffix in ("parquet", "csv"):
        path = folder / f"{name}.{suffix}"
        fsync_file(path)
        files[f"{key}/{name}.{suffix}"] = file_sha256(path)


def _write_manifest(version: Path, manifest: dict[str, object]) -> None:
    """Written last: a folder with a manifest holds every file it names."""
    (version / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    fsync_file(version / MANIFEST)


def exports_naming(data_dir: Path, erased: set[str]) -> list[Path]:
    """The export folders whose files name one of the `erased` customers."""
    value_set = pa.array(sorted(erased), pa.string())
    found = []
    for folder in sorted(exports_root(data_dir).glob("date=*")):
        for path in sorted(folder.glob("*/*.parquet")):
            if pc.any(pc.is_in(pq.read_table(path, columns=["customer_id"])["customer_id"], value_set)).as_py():
                found.append(folder)
                break
    return found


def erase_from_exports(data_dir: Path, erased: set[str]) -> list[tuple[Path, int]]:
    """Publish again, without their rows, every export folder whose files name one of the `erased` customers
    (core.erasure); the manifest's counts and checksums follow. Returns each folder published again with the
    rows removed from it (audience and changes lists; each is written as CSV and Parquet)."""
    rewritten = []
    value_set = pa.array(sorted(erased), pa.string())
    for folder in exports_naming(data_dir, erased):
        if not (folder / MANIFEST).is_file():
            continue  # not a published export: the erasure's last search names it
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        tables = {
            (entry["key"], name): pq.read_table(folder / entry["key"] / f"{name}.parquet")
            for entry in manifest["campaigns"]
            for name in ("audience", "changes")
        }

        def write(version: Path, manifest=manifest, tables=tables) -> None:
            files: dict[str, str] = {}
            for entry in manifest["campaigns"]:
                for name in ("audience", "changes"):
                    table = tables[(entry["key"], name)]
                    table = table.filter(pc.invert(pc.is_in(table["customer_id"], value_set)))
                    _write_list(version, entry["key"], name, table, files)
                    if name == "audience":
                        entry["customers"] = table.num_rows
                    else:
                        counted = Counter(table["change"].to_pylist())
                        for change in (ADDED, REMOVED, MOVED_IN, MOVED_OUT):
                            entry[change] = counted[change]
            manifest["files"] = dict(sorted(files.items()))
            _write_manifest(version, manifest)

        publish_version(folder, write)
        removed = sum(
            int(pc.sum(pc.is_in(table["customer_id"], value_set)).as_py() or 0) for table in tables.values()
        )
        rewritten.append((folder, removed))
    return rewritten
