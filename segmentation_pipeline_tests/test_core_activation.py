"""Audiences and their export: campaigns, control groups, exclusivity, suppression, consent, the export files,
the changes between exports, hashed identifiers, a failed export leaving the previous one, and erasure."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import activation
from segmentation_pipeline.core.activation import AudienceSettings, Campaign, Suppressions
from segmentation_pipeline.core.errors import DataValidationError

DAY, NEXT = date(2025, 3, 1), date(2025, 3, 2)


def profiles_table(ids: list[str], cycle_value: float = 10.0) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "canonical_id": ids,
            "lifecycle_stage": ["loyal"] * n,
            "clv_estimate": [100.0 + index for index in range(n)],
            "churn_risk": [0.1] * n,
            "recency_days": [5.0] * n,
            "cycle_value": [cycle_value] * n,
        }
    )


def assignments(segment_of: dict[str, str]) -> pa.Table:
    return pa.table({"canonical_id": list(segment_of), "segment_id": list(segment_of.values())})


def campaign(segment_id: str, channel: str, rank: int = 0) -> Campaign:
    return Campaign(activation.campaign_key(segment_id, channel), segment_id, f"{segment_id} name", channel, "any time",
                    "an offer", rank)  # fmt: skip


CUSTOMERS = [f"c{index:04d}" for index in range(2000)]


def test_campaigns_are_the_recommendations_of_approved_and_actionable_segments() -> None:
    segments = pa.table({"segment_id": ["S01", "S02", "S03"], "name": ["A", "B", "C"]})
    viability = pa.table({"segment_id": ["S01", "S02", "S03"], "approved": [True, True, False]})
    actionability = pa.table({"segment_id": ["S01", "S02", "S03"], "actionable": [True, False, True]})
    recommendation = {"timing": "weekends", "offer": "a win-back", "audience_size": 10, "rationale": "r"}
    explanations = pa.table(
        {
            "segment_id": ["S01", "S02", "S03"],
            "recommendations": [
                [recommendation | {"channel": "email"}, recommendation | {"channel": "Mobile App"}],
                [recommendation | {"channel": "email"}],
                [recommendation | {"channel": "web"}],
            ],
        }
    )
    campaigns = activation.campaigns_of(segments, viability, actionability, explanations)
    assert [(item.key, item.rank, item.segment_name) for item in campaigns] == [
        ("S01-email", 0, "A"),
        ("S01-mobile_app", 1, "A"),
    ]


def test_the_control_group_is_a_stable_hash_of_customer_and_campaign() -> None:
    draws = activation.control_draws(["c1", "c2"], "S01-email")
    expected = int.from_bytes(hashlib.sha256(b"S01-email|c1").digest()[:8], "big") / 2**64
    assert draws[0] == pytest.approx(expected, abs=0)
    # Another campaign draws other numbers for the same customers.
    assert not np.array_equal(draws, activation.control_draws(["c1", "c2"], "S02-email"))

    built = activation.build_audiences(
        profiles_table(CUSTOMERS), assignments(dict.fromkeys(CUSTOMERS, "S01")), [campaign("S01", "email")],
        AudienceSettings(control_share=0.1),
    )  # fmt: skip
    groups = built.table.to_pandas().set_index("canonical_id")["group"]
    control = groups[groups == activation.CONTROL]
    # About 10% of 2,000 (binomial: 200 +- 3 standard deviations of 13.4).
    assert 160 <= len(control) <= 240
    assert set(control.index) == {
        customer for customer, draw in zip(CUSTOMERS, activation.control_draws(CUSTOMERS, "S01-email")) if draw < 0.1
    }
    # The same customers, another day, in another order: the same groups.
    again = activation.build_audiences(
        profiles_table(CUSTOMERS[::-1]), assignments(dict.fromkeys(CUSTOMERS[::-1], "S01")),
        [campaign("S01", "email")], AudienceSettings(control_share=0.1),
    )  # fmt: skip
    columns = ["canonical_id", "campaign_key", "group"]
    assert sorted(map(tuple, again.table.select(columns).to_pandas().to_numpy().tolist())) == sorted(
        map(tuple, built.table.select(columns).to_pandas().to_numpy().tolist())
    )
    balance = built.balance["S01-email"]
    assert balance["control"]["customers"] + balance["treatment"]["customers"] == 2000


def test_a_customer_is_in_one_campaign_the_one_worth_most() -> None:
    ids = CUSTOMERS[:100]
    campaigns = [campaign("S01", "email", 0), campaign("S01", "sms", 1)]
    # The second recommendation measured a higher uplift: with expected value, it wins; else the first does.
    built = activation.build_audiences(
        profiles_table(ids), assignments(dict.fromkeys(ids, "S01")), campaigns, AudienceSettings(),
        uplifts={"S01-sms": 0.3},
    )  # fmt: skip
    table = built.table.to_pandas()
    assert table["canonical_id"].is_unique and len(table) == 100
    assert set(table["campaign_key"]) == {"S01-sms"}
    assert table["expected_value"].tolist() == pytest.approx([3.0] * 100)
    assert built.contested == 100
    first = activation.build_audiences(
        profiles_table(ids), assignments(dict.fromkeys(ids, "S01")), campaigns,
        AudienceSettings(exclusivity="first_recommendation"), uplifts={"S01-sms": 0.3},
    )  # fmt: skip
    assert set(first.table["campaign_key"].to_pylist()) == {"S01-email"}
    with pytest.raises(DataValidationError, match="exclusivity 'loudest' is not one of"):
        AudienceSettings(exclusivity="loudest")


def test_consent_limits_channels_and_suppressed_customers_never_appear(tmp_path: Path) -> None:
    ids = CUSTOMERS[:10]
    merge_map = pa.table({"old_id": ["old-c0001"], "canonical_id": ["c0001"]})
    suppression = tmp_path / "suppressed.csv"
    suppression.write_text(
        "customer_id,reason\n"
        "c0000,unsubscribed\n"
        "old-c0001,erased\n"  # a merged-away ID suppresses its customer
        "c0002,\n"  # no reason: reported
        "nobody,unsubscribed\n"  # never seen: reported
        "c0003,no_consent,extra\n"  # a field too many: reported
        "\n"
    )
    suppressions = activation.read_suppressions(suppression, merge_map, set(ids))
    assert suppressions.customers == {"c0000": "unsubscribed", "c0001": "erased", "nobody": "unsubscribed"}
    assert suppressions.unknown_ids == ["nobody"]
    assert suppressions.problems == ["line 4: no reason", "line 6: 3 fields, expected 2"]
    attributes_file = tmp_path / "attributes.csv"
    attributes_file.write_text(
        "customer_id,email,consent_email\n" + "".join(f"{cid},{cid}@Example.com,{cid != 'c0004'}\n" for cid in ids)
    )
    attributes = activation.read_attributes(attributes_file, merge_map)
    built = activation.build_audiences(
        profiles_table(ids), assignments(dict.fromkeys(ids, "S01")),
        [campaign("S01", "email", 0), campaign("S01", "sms", 1)], AudienceSettings(control_share=0.0),
        suppressions, attributes,
    )  # fmt: skip
    where = dict(zip(built.table["canonical_id"].to_pylist(), built.table["campaign_key"].to_pylist()))
    assert "c0000" not in where and "c0001" not in where
    assert where["c0004"] == "S01-sms"  # no e-mail consent: the next channel
    assert {customer for customer, key in where.items() if key == "S01-email"} == set(ids) - {"c0000", "c0001", "c0004"}
    assert built.suppressed == {"erased": 1, "unsubscribed": 1}
    assert built.without_consent == {"email": 1}
    with pytest.raises(DataValidationError, match="must name customer_id and reason"):
        (tmp_path / "bad.csv").write_text("id,why\nc1,x\n")
        activation.read_suppressions(tmp_path / "bad.csv", None, set())


def audience(rows: list[tuple[str, str, str]]) -> pa.Table:
    """(customer, campaign key, group) rows as the audiences table holds them."""
    return pa.table(
        {
            "canonical_id": [row[0] for row in rows],
            "segment_id": [row[1].split("-")[0] for row in rows],
            "campaign_key": [row[1] for row in rows],
            "channel": [row[1].split("-")[1] for row in rows],
            "lifecycle_stage": ["loyal"] * len(rows),
            "clv_estimate": [100.0] * len(rows),
            "churn_risk": [0.2] * len(rows),
            "group": [row[2] for row in rows],
        }
    )


def test_exports_hold_the_treatment_lists_and_the_changes_since_the_previous_export(tmp_path: Path) -> None:
    first = activation.export_audiences(
        tmp_path, DAY,
        audience([("a", "S01-email", "treatment"), ("b", "S01-email", "treatment"), ("c", "S01-email", "control"),
                  ("d", "S02-email", "treatment")]),
    )  # fmt: skip
    assert first.previous_day is None
    assert [(item.key, item.customers, item.control, item.added) for item in first.campaigns] == [
        ("S01-email", 2, 1, 2),
        ("S02-email", 1, 0, 1),
    ]
    second = activation.export_audiences(
        tmp_path, NEXT,
        audience([("a", "S01-email", "treatment"), ("d", "S01-email", "treatment"), ("e", "S01-email", "treatment")]),
    )  # fmt: skip
    assert second.previous_day == DAY
    folder = activation.export_folder(tmp_path, NEXT)
    changes = {
        key: pq.read_table(folder / key / "changes.parquet").to_pylist() for key in ("S01-email", "S02-email")
    }
    assert changes["S01-email"] == [
        {"customer_id": "d", "change": "moved_in", "other_campaign": "S02-email"},
        {"customer_id": "e", "change": "added", "other_campaign": None},
        {"customer_id": "b", "change": "removed", "other_campaign": None},
    ]
    # S02 has nobody left: a folder of removals (its customer moved) tells the campaign tool so.
    assert changes["S02-email"] == [{"customer_id": "d", "change": "moved_out", "other_campaign": "S01-email"}]
    assert pq.read_table(folder / "S02-email" / "audience.parquet").num_rows == 0
    assert pacsv.read_csv(folder / "S01-email" / "audience.csv")["customer_id"].to_pylist() == ["a", "d", "e"]
    manifest = json.loads((folder / activation.MANIFEST).read_text())
    assert manifest["snapshot"] == NEXT.isoformat() and manifest["previous_export"] == DAY.isoformat()
    assert manifest["schema_version"] == activation.EXPORT_SCHEMA_VERSION
    assert len(manifest["files"]) == 8
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    # The day after, S02 (emptied the day before) is not listed again.
    third = activation.export_audiences(tmp_path, date(2025, 3, 3), audience([("a", "S01-email", "treatment")]))
    assert [item.key for item in third.campaigns] == ["S01-email"]
    # Exporting the day again gives the same files.
    before = {name: (folder / name).read_bytes() for name in manifest["files"]}
    activation.export_audiences(
        tmp_path, NEXT,
        audience([("a", "S01-email", "treatment"), ("d", "S01-email", "treatment"), ("e", "S01-email", "treatment")]),
    )  # fmt: skip
    assert {name: (folder / name).read_bytes() for name in manifest["files"]} == before


def test_identifiers_are_normalised_and_only_their_hashes_written(tmp_path: Path) -> None:
    attributes = pa.table({"canonical_id": ["a", "b"], "email": ["  Ann@Example.COM ", None], "phone": ["+1 (555) 010-9999", "555 0100"]})
    result = activation.export_audiences(tmp_path, DAY, audience([("a", "S01-email", "treatment"),
                                                                  ("b", "S01-email", "treatment")]), attributes)  # fmt: skip
    rows = pq.read_table(result.folder / "S01-email" / "audience.parquet").to_pylist()
    assert rows[0]["email_sha256"] == hashlib.sha256(b"ann@example.com").hexdigest()
    assert rows[0]["phone_sha256"] == hashlib.sha256(b"+15550109999").hexdigest()
    assert rows[1]["email_sha256"] is None and rows[1]["phone_sha256"] == hashlib.sha256(b"5550100").hexdigest()
    text = b"".join(path.read_bytes() for path in result.folder.rglob("*") if path.is_file())
    assert b"example" not in text.lower() and b"555" not in text
    plain = activation.export_audiences(tmp_path, NEXT, audience([("a", "S01-email", "treatment")]), attributes,
                                        hash_identifiers=False)  # fmt: skip
    assert pq.read_table(plain.folder / "S01-email" / "audience.parquet")["email"].to_pylist() == ["ann@example.com"]


def test_an_export_that_fails_midway_leaves_the_previous_one_as_the_latest(tmp_path: Path, monkeypatch) -> None:
    activation.export_audiences(tmp_path, DAY, audience([("a", "S01-email", "treatment")]))
    written = []

    def failing(table, where, **_):
        written.append(where)
        raise OSError("disk full")

    monkeypatch.setattr(activation.pacsv, "write_csv", failing)
    with pytest.raises(OSError, match="disk full"):
        activation.export_audiences(tmp_path, NEXT, audience([("b", "S01-email", "treatment")]))
    assert written
    assert activation.complete_export_days(tmp_path) == [DAY]
    assert not activation.export_folder(tmp_path, NEXT).exists()
    assert not list((activation.exports_root(tmp_path) / ".versions").glob("date=2025-03-02*"))


def test_erasure_publishes_the_exports_again_without_the_customer(tmp_path: Path) -> None:
    activation.export_audiences(tmp_path, DAY, audience([("a", "S01-email", "treatment"), ("b", "S01-email", "treatment")]))
    activation.export_audiences(tmp_path, NEXT, audience([("a", "S01-email", "treatment")]))
    assert activation.exports_naming(tmp_path, {"b"}) == [activation.export_folder(tmp_path, DAY),
                                                          activation.export_folder(tmp_path, NEXT)]  # fmt: skip
    rewritten = activation.erase_from_exports(tmp_path, {"b"})
    # DAY: b's audience row (Parquet) and its "added" change; NEXT: its "removed" change.
    assert [(folder.name, rows) for folder, rows in rewritten] == [("date=2025-03-01", 2), ("date=2025-03-02", 1)]
    assert activation.exports_naming(tmp_path, {"b"}) == []
    for day in (DAY, NEXT):
        folder = activation.export_folder(tmp_path, day)
        manifest = json.loads((folder / activation.MANIFEST).read_text())
        assert b"b" not in (folder / "S01-email" / "audience.csv").read_bytes().split(b"\n", 1)[1]
        for name, digest in manifest["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert json.loads((activation.export_folder(tmp_path, DAY) / activation.MANIFEST).read_text())["campaigns"][0][
        "customers"
    ] == 1
    assert activation.erase_from_exports(tmp_path, {"b"}) == []


def test_bad_settings_and_missing_files_are_named() -> None:
    with pytest.raises(DataValidationError, match="control_share must lie in"):
        AudienceSettings(control_share=1.0)
    with pytest.raises(DataValidationError, match="suppression file .* does not exist"):
        activation.read_suppressions(Path("/nonexistent/suppressed.csv"), None, set())
    assert Suppressions.none().customers == {}
