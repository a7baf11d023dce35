"""actionability and explanations materialized by Dagster, with the mock and with a real HTTP provider."""

import hashlib
import hmac
import json
import re
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import quality, synthetic
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.llm.actionability import DIMENSIONS, Rubric, stored_rubric
from segmentation_pipeline.core.llm.prompts import PROMPT_VERSION
from segmentation_pipeline.core.schemas import (
    ACTIONABILITY,
    AUDIENCE_EXPORTS,
    AUDIENCES,
    CLUSTERS,
    EXPLANATIONS,
    SEGMENTS,
    VIABILITY,
    ActionabilityEvaluation,
    SegmentExplanation,
)
from segmentation_pipeline.core.settings import LLM_API_KEY_VARIABLE
from segmentation_pipeline.core.sources import EVENTS, MERGES
from segmentation_pipeline.core.warehouse import Warehouse, days_between
from segmentation_pipeline.defs.assets.activation import audience_exports, audiences
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.insights import actionability, explanations
from segmentation_pipeline.defs.assets.profiles import profiles
from segmentation_pipeline.defs.assets.segmentation import clusters, robustness, viability
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)

from .llm_server import MODEL_VOICE, SERVER_ERROR, ChatServer, running_server
from .webhook_server import WebhookServer, running_webhook

DAY = date(2025, 12, 31)

SOURCE = synthetic.SyntheticSettings(n_customers=2000)
INSIGHTS = [actionability, explanations]
API_KEY = "sk-insights-test-4f9e2a"


def resources(data_dir: Path, llm: LLMResource | None = None) -> dict[str, object]:
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(n_customers=SOURCE.n_customers),
        "llm": llm or LLMResource(),
        "webhook": WebhookResource(),
    }


def provider(server: ChatServer, **fields: object) -> LLMResource:
    return LLMResource(
        provider="openai",
        base_url=server.base_url,
        model="test-model",
        api_key=dg.EnvVar(LLM_API_KEY_VARIABLE),
        backoff_seconds=0.01,
        **fields,
    )


def run(instance: dg.DagsterInstance, data_dir: Path, assets=None, llm=None, run_config=None, raise_on_error=True):
    return dg.materialize(
        assets or INSIGHTS,
        instance=instance,
        resources=resources(data_dir, llm),
        partition_key=DAY.isoformat(),
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory, instance: dg.DagsterInstance) -> Path:
    """Seven months of synthetic history and one snapshot through viability (no LLM stage yet)."""
    data_dir = tmp_path_factory.mktemp("snapshot") / "data"
    warehouse = Warehouse(data_dir)
    days = days_between(date(2025, 6, 1), DAY)
    ingest(warehouse, EVENTS, days, SOURCE, ())
    ingest(warehouse, MERGES, days, SOURCE, ())
    result = run(
        instance,
        data_dir,
        assets=[merge_map, profiles, clusters, robustness, viability],
        run_config=dg.RunConfig({"robustness": {"config": {"n_bootstrap": 5}}}),
    )
    assert result.success
    return data_dir


@pytest.fixture
def data_dir(snapshot: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(snapshot, copy)
    return copy


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(LLM_API_KEY_VARIABLE, API_KEY)
    with running_server(ChatServer()) as state:
        yield state


def read(data_dir: Path, spec) -> list[dict]:
    return Warehouse(data_dir).read_partition(spec, DAY).to_pylist()


def test_the_mock_evaluates_and_explains_every_segment(instance: dg.DagsterInstance, data_dir: Path) -> None:
    result = run(instance, data_dir)
    assert result.success
    evaluations = checks(result)
    assert len(evaluations) == 6
    assert all(e.passed for e in evaluations.values()), [
        (k, e.description) for k, e in evaluations.items() if not e.passed
    ]
    segments = read(data_dir, SEGMENTS)
    rows = read(data_dir, ACTIONABILITY)
    assert [row["segment_id"] for row in rows] == [segment["segment_id"] for segment in segments]
    assert {(row["source"], row["provider"], row["model"], row["prompt_version"]) for row in rows} == {
        ("mock", "mock", "rules", PROMPT_VERSION)
    }
    # Different segments, different judgements: not one constant answer.
    assert len({(row["what_score"], row["when_score"], row["how_score"], row["who_score"]) for row in rows}) == len(
        rows
    )
    rubric = Rubric()
    approved = {row["segment_id"]: row["approved"] for row in read(data_dir, VIABILITY)}
    for row in rows:
        scores = {dimension: row[f"{dimension}_score"] for dimension in DIMENSIONS}
        # A segment viability rejected is never actionable, however clear its data.
        assert row["actionable"] == (rubric.clear(scores) and approved[row["segment_id"]])
    assert any(rubric.clear({d: row[f"{d}_score"] for d in DIMENSIONS}) and not row["actionable"] for row in rows)
    stated = metadata(result, "actionability")
    assert stated["actionable_segments"] == sum(row["actionable"] for row in rows)
    # Rich events: every dimension is measurable, none is shown as not measurable.
    assert all(row[f"{dimension}_score"] is not None for row in rows for dimension in DIMENSIONS)
    assert (stated["owned_channels"], stated["rubric"]) == ("email", rubric.describe())
    assert stored_rubric(Warehouse(data_dir), DAY) == rubric
    assert (stated["requests"], stated["cache_hits"], stated["fallbacks"], stated["prompt_tokens"]) == (0, 0, 0, 0)
    explained = read(data_dir, EXPLANATIONS)
    decided = {row["segment_id"]: row for row in read(data_dir, VIABILITY)}
    judged = {row["segment_id"]: row for row in rows}
    for row in explained:
        segment_id = row["segment_id"]
        targeted = decided[segment_id]["approved"] and judged[segment_id]["actionable"]
        assert bool(row["recommendations"]) == targeted
        assert row["expected_roi"] == round(decided[segment_id]["expected_roi"], 2)
        size = next(segment["size"] for segment in segments if segment["segment_id"] == segment_id)
        assert all(item["audience_size"] == size for item in row["recommendations"])
        assert f"{size:,} customers" in row["executive_summary"]
    assert metadata(result, "explanations")["segments_with_campaigns"] == sum(
        bool(r["recommendations"]) for r in explained
    )


def test_a_rerun_with_the_mock_writes_the_same_answers(instance: dg.DagsterInstance, data_dir: Path) -> None:
    assert run(instance, data_dir).success
    first = {spec.name: read(data_dir, spec) for spec in (ACTIONABILITY, EXPLANATIONS)}
    assert run(instance, data_dir).success
    assert {spec.name: read(data_dir, spec) for spec in (ACTIONABILITY, EXPLANATIONS)} == first


def test_stored_answers_are_the_records_models_and_the_catalog_joins_them(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    assert run(instance, data_dir).success
    warehouse = Warehouse(data_dir)
    for spec, model in ((ACTIONABILITY, ActionabilityEvaluation), (EXPLANATIONS, SegmentExplanation)):
        assert pq.read_schema(warehouse.partition_path(spec, DAY)).remove_metadata() == spec.schema
        for row in read(data_dir, spec):
            assert model.model_validate(row).model_dump() == row
    with duckdb.connect(str(data_dir / "segmentation.duckdb"), read_only=True) as con:
        # The day's snapshot has no report yet: it is in the tables' views, not yet their `_latest` ones.
        joined = con.execute(
            """SELECT count(*) FROM segments s
               JOIN actionability a USING (date, segment_id) JOIN explanations e USING (date, segment_id)
               WHERE date = ?""",
            [DAY],
        ).fetchone()[0]
        assert joined == len(read(data_dir, SEGMENTS))
        assert con.execute("SELECT count(*) FROM segments_latest").fetchone()[0] == 0


def test_the_openai_provider_answers_through_dagster_and_a_rerun_comes_from_the_cache(
    instance: dg.DagsterInstance, data_dir: Path, server: ChatServer
) -> None:
    segments = len(read(data_dir, SEGMENTS))
    first = run(instance, data_dir, llm=provider(server))
    assert first.success
    assert len(server.requests) == 2 * segments
    assert all(request.headers["authorization"] == f"Bearer {API_KEY}" for request in server.requests)
    stated = metadata(first, "actionability")
    assert (stated["provider"], stated["model"], stated["requests"], stated["cache_hits"]) == (
        "openai",
        "test-model",
        segments,
        0,
    )
    assert stated["prompt_tokens"] > 0 and stated["completion_tokens"] > 0
    assert stated["base_url"] == server.base_url
    rows = read(data_dir, ACTIONABILITY) + read(data_dir, EXPLANATIONS)
    assert {row["source"] for row in rows} == {"llm"}
    assert all(row["reason"].startswith(MODEL_VOICE) for row in read(data_dir, ACTIONABILITY))
    assert all(e.passed for e in checks(first).values())
    stored = {spec.name: read(data_dir, spec) for spec in (ACTIONABILITY, EXPLANATIONS)}

    server.reset()
    second = run(instance, data_dir, llm=provider(server))
    assert second.success
    assert server.requests == []
    for asset in ("actionability", "explanations"):
        assert (metadata(second, asset)["requests"], metadata(second, asset)["cache_hits"]) == (0, segments)
    assert {spec.name: read(data_dir, spec) for spec in (ACTIONABILITY, EXPLANATIONS)} == stored

    # read_cache off asks again, as an analyst re-running one asset from the Launchpad would.
    third = run(
        instance,
        data_dir,
        [actionability],
        provider(server),
        dg.RunConfig({"actionability": {"config": {"read_cache": False}}}),
    )
    assert metadata(third, "actionability")["requests"] == segments

    # The key went to the server and nowhere else: not into metadata, logs or stored rows.
    for result in (first, second, third):
        logs = instance.all_logs(result.run_id)
        assert logs and not any(API_KEY in dg.serialize_value(entry) for entry in logs)
    assert API_KEY not in json.dumps(rows, default=str)


def test_no_customer_id_reaches_the_provider(instance: dg.DagsterInstance, data_dir: Path, server: ChatServer) -> None:
    assert run(instance, data_dir, llm=provider(server)).success
    customer_ids = set(Warehouse(data_dir).read_partition(CLUSTERS, DAY)["canonical_id"].to_pylist())
    assert len(customer_ids) > 1000
    prompts = [json.dumps(request.body) for request in server.requests]
    assert len(prompts) == 2 * len(read(data_dir, SEGMENTS))
    id_shaped = re.compile(r"\b[A-Z]\d{7}\b")  # how the synthetic source writes IDs
    for prompt in prompts:
        assert not id_shaped.findall(prompt)
        assert not any(customer_id in prompt for customer_id in customer_ids)


def test_a_failing_provider_leaves_flagged_fallbacks_and_a_warning(
    instance: dg.DagsterInstance, data_dir: Path, server: ChatServer
) -> None:
    server.reset(otherwise=SERVER_ERROR)
    result = run(instance, data_dir, llm=provider(server, max_retries=1))
    assert result.success
    segments = len(read(data_dir, SEGMENTS))
    assert len(server.requests) == 2 * 2 * segments
    for spec in (ACTIONABILITY, EXPLANATIONS):
        rows = read(data_dir, spec)
        assert {row["source"] for row in rows} == {"fallback"}
        assert all("HTTP 500" in row["fallback_reason"] for row in rows)
    assert metadata(result, "actionability")["fallbacks"] == segments
    assert "fallback_reasons" in metadata(result, "explanations")
    outcome = checks(result)
    for asset in ("actionability", "explanations"):
        warning = outcome[(asset, "answered_by_configured_model")]
        assert not warning.passed
        assert warning.severity == dg.AssetCheckSeverity.WARN
        assert outcome[(asset, "numbers_match_statistics")].passed


def test_rubric_settings_change_the_verdicts(instance: dg.DagsterInstance, data_dir: Path) -> None:
    strict = run(
        instance,
        data_dir,
        [actionability],
        run_config=dg.RunConfig({"actionability": {"config": {"strong_score": 0.99, "min_strong_dimensions": 4}}}),
    )
    assert strict.success
    assert not any(row["actionable"] for row in read(data_dir, ACTIONABILITY))
    # The answers are stored with the rubric they were judged by.
    assert stored_rubric(Warehouse(data_dir), DAY) == Rubric(strong_score=0.99, min_strong_dimensions=4)
    assert all(e.passed for e in checks(strict).values())


def test_explanations_refuse_evaluations_of_another_snapshot(instance: dg.DagsterInstance, data_dir: Path) -> None:
    assert run(instance, data_dir, [actionability]).success
    warehouse = Warehouse(data_dir)
    stored = warehouse.read_partition(ACTIONABILITY, DAY)
    warehouse.write_partition(ACTIONABILITY, DAY, stored.filter(pc.not_equal(stored["segment_id"], "S02")))
    result = run(instance, data_dir, [explanations], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "actionability does not match the snapshot (S02: no answer)" in str(failure.event_specific_data.error)


def test_explanations_refuse_evaluations_of_older_statistics(instance: dg.DagsterInstance, data_dir: Path) -> None:
    assert run(instance, data_dir, [actionability]).success
    # Viability re-run with other economics after actionability: same segment IDs, other statistics.
    repriced = run(instance, data_dir, [viability], run_config=dg.RunConfig({"viability": {"config": {"margin": 0.5}}}))
    assert repriced.success
    result = run(instance, data_dir, [explanations], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    # The segments whose value changed with the margin (a segment of prospects has none, so its ROI stays).
    error = str(failure.event_specific_data.error)
    stale = [row["segment_id"] for row in read(data_dir, VIABILITY) if row["campaign_value"] > 0]
    assert stale
    assert all(f"{segment}: answered on other statistics than the stored snapshot's" in error for segment in stale)


def test_answers_written_before_the_snapshot_changed_fail_the_numbers_check(
    instance: dg.DagsterInstance, data_dir: Path
) -> None:
    assert run(instance, data_dir).success
    # Viability re-run with other economics: the stored explanations quote the old ROI.
    repriced = run(
        instance,
        data_dir,
        [viability],
        run_config=dg.RunConfig({"viability": {"config": {"campaign_cost_per_customer": 7.5}}}),
    )
    assert repriced.success
    outcome = quality.numbers_match_statistics(Warehouse(data_dir), DAY, EXPLANATIONS)
    assert not outcome.passed
    segments = len(read(data_dir, SEGMENTS))
    # Every answer is stale, and those quoting the old ROI are unfaithful too.
    assert outcome.metadata["violations"] > segments
    assert "answered on other statistics" in outcome.summary
    # Re-running the insights brings them in line again.
    again = run(instance, data_dir)
    assert all(e.passed for e in checks(again).values())


def test_an_insight_stage_without_its_upstream_fails_naming_it(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    result = run(instance, tmp_path / "data", [actionability], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"segments for {DAY.isoformat()} is not materialized" in str(failure.event_specific_data.error)


def test_audiences_leave_as_files_and_through_the_webhook_once(
    instance: dg.DagsterInstance, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's campaigns as audiences (one campaign per customer, a control group kept back), exported as
    files, and each campaign's changes posted to a webhook receiver on 127.0.0.1, signed; a re-run sends
    nothing twice."""
    assert run(instance, data_dir).success
    monkeypatch.setenv("SEGMENTATION_WEBHOOK_SECRET", "whsec-activation")
    with running_webhook(WebhookServer()) as receiver:
        hooked = resources(data_dir) | {"webhook": WebhookResource(url=receiver.url(), batch_size=50)}
        for _ in range(2):
            result = dg.materialize(
                [audiences, audience_exports], instance=instance, resources=hooked, partition_key=DAY.isoformat()
            )
            assert result.success
            if not receiver.received:
                break
            sent_first = len(receiver.received)
        assert len(receiver.received) == sent_first  # the second run found every batch delivered
    store = Warehouse(data_dir)
    people = store.read_partition(AUDIENCES, DAY).to_pandas()
    assert people["canonical_id"].is_unique
    assert 0.05 <= (people["group"] == "control").mean() <= 0.15
    exported = store.read_partition(AUDIENCE_EXPORTS, DAY).to_pylist()
    assert {row["campaign_key"] for row in exported} == set(people["campaign_key"])
    posted: dict[str, list[str]] = {}
    for request in receiver.received:
        signature = hmac.new(b"whsec-activation", request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-segmentation-signature"] == f"sha256={signature}"
        body = json.loads(request.body)
        posted.setdefault(body["campaign"], []).extend(row["customer_id"] for row in body["rows"])
    for row in exported:
        treated = people[(people["campaign_key"] == row["campaign_key"]) & (people["group"] == "treatment")]
        listed = pq.read_table(Path(row["folder"]) / "audience.parquet")["customer_id"].to_pylist()
        assert listed == treated["canonical_id"].tolist() and row["customers"] == len(listed)
        # The first export: every customer is an addition, and the webhook received exactly those.
        assert sorted(posted[row["campaign_key"]]) == sorted(listed)


def test_the_business_settings_reach_the_answers_and_the_stored_rubric(
    instance: dg.DagsterInstance, data_dir: Path, tmp_path: Path
) -> None:
    """EUR in Europe/Berlin with email and app owned: the answers write money in euros and day parts in
    Berlin's hours (on 2025-12-31, UTC+1), the rubric stored with them says so, and the checks pass."""
    copy = tmp_path / "business"
    shutil.copytree(data_dir, copy)
    business = LLMResource(currency="EUR", timezone="Europe/Berlin", owned_channels=["email", "app"])
    result = run(instance, copy, llm=business)
    assert result.success
    assert all(evaluation.passed for evaluation in checks(result).values())
    stored = stored_rubric(Warehouse(copy), DAY)
    assert (stored.currency, stored.timezone, stored.owned_channels) == ("EUR", "Europe/Berlin", ["email", "app"])
    explained = read(copy, EXPLANATIONS)
    assert all("mean CLV of \u20ac" in row["executive_summary"] for row in explained)
    assert not any("UTC" in row["executive_summary"] for row in explained)
    timings = [item["timing"] for row in explained for item in row["recommendations"]]
    assert timings and not any("UTC" in timing for timing in timings)
    assert any("Europe/Berlin" in timing for timing in timings)
    assert any("19:00-01:00 Europe/Berlin" in timing or "07:00-13:00 Europe/Berlin" in timing for timing in timings)
    with pytest.raises(ValueError, match="not an IANA time zone"):
        LLMResource(timezone="Berlin")
