"""The Definitions load, validate and hold what the graph promises."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from segmentation_pipeline.definitions import defs
from segmentation_pipeline.instance import prepare_instance

REPOSITORY = Path(__file__).resolve().parents[1]


def test_definitions_validate_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "SEGMENTATION_DATA_DIR": str(tmp_path / "data")}
    env.pop("SEGMENTATION_SOURCE_CONFIG", None)
    (tmp_path / "dagster.yaml").touch()
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(REPOSITORY / "workspace.yaml")],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_graph_has_the_foundation_assets_on_one_daily_partitioning() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_events", "id_history", "merge_map"} <= keys
    partitions = {graph.get(dg.AssetKey(key)).partitions_def for key in ("raw_events", "id_history", "merge_map")}
    assert len(partitions) == 1
    (daily,) = partitions
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.timezone == "UTC"
    assert daily.get_first_partition_key() == "2025-01-01"
    assert graph.get(dg.AssetKey("merge_map")).parent_keys == {dg.AssetKey("id_history")}
    for key in ("raw_events", "id_history", "clusters"):
        assert graph.get(dg.AssetKey(key)).backfill_policy == dg.BackfillPolicy.single_run()


def test_asset_checks_are_declared() -> None:
    checks = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        ("raw_events", "no_null_customer_ids"),
        ("raw_events", "valid_event_types"),
        ("raw_events", "timestamps_inside_partition"),
        ("raw_events", "quarantine_rate"),
        ("raw_events", "every_day_has_input"),
        ("raw_events", "no_rows_for_other_days"),
        ("merge_map", "canonical_ids_map_to_themselves"),
        ("merge_map", "one_canonical_id_per_id"),
        ("merge_map", "no_unresolved_chains"),
        ("merge_map", "no_junk_merged"),
        ("profiles", "unique_per_customer"),
        ("profiles", "no_merged_away_ids"),
        ("clusters", "every_profile_in_one_segment"),
        ("clusters", "previous_snapshot_unchanged"),
        ("robustness", "scores_in_unit_interval"),
        ("viability", "every_segment_decided"),
        ("actionability", "every_segment_evaluated"),
        ("actionability", "numbers_match_statistics"),
        ("actionability", "answered_by_configured_model"),
        ("explanations", "every_segment_explained"),
        ("explanations", "numbers_match_statistics"),
        ("explanations", "answered_by_configured_model"),
        ("audiences", "suppression_file_is_clean"),
        ("report", "report_complete"),
    }
    # A day whose previous snapshot changed while it ran stops its run before the stages after clusters.
    blocking = {spec.name: spec.blocking for spec in defs.resolve_assets_def("clusters").check_specs}
    assert blocking == {"every_profile_in_one_segment": False, "previous_snapshot_unchanged": True}


def test_the_analytic_stages_hang_off_the_foundation_in_order() -> None:
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {parent.to_user_string() for parent in graph.get(dg.AssetKey(key)).parent_keys}

    # The purchase model is the one the day's backtest chose.
    assert parents("clv_backtest") == {"raw_events", "merge_map"}
    assert parents("profiles") == {"raw_events", "merge_map", "clv_backtest"}
    # Segment IDs follow the previous day's snapshot.
    assert parents("clusters") == {"profiles", "clusters"}
    previous = graph.get(dg.AssetKey("clusters")).partition_mappings[dg.AssetKey("clusters")]
    assert previous == dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
    assert parents("segment_migration") == {"clusters"}
    assert parents("robustness") == {"clusters", "profiles"}
    # Measured campaign uplifts price the segments' campaigns; they are measured from the events and IDs alone.
    assert parents("campaign_results") == {"raw_events", "merge_map"}
    assert parents("viability") == {"robustness", "clusters", "campaign_results"}
    assert parents("actionability") == {"viability", "robustness", "clusters"}
    assert parents("explanations") == {"actionability", "viability", "robustness", "clusters"}
    # Audiences follow the campaigns of approved and actionable segments; the report shows the export.
    assert parents("audiences") == {"explanations", "actionability", "viability", "clusters", "profiles", "merge_map"}
    assert parents("audience_exports") == {"audiences"}
    assert parents("report") == {
        "audience_exports",
        "explanations",
        "actionability",
        "viability",
        "robustness",
        "segment_migration",
        "clusters",
        "profiles",
        "clv_backtest",
        "merge_map",
        "campaign_results",
    }
    daily = graph.get(dg.AssetKey("raw_events")).partitions_def
    for key in (
        "profiles",
        "clusters",
        "segment_migration",
        "robustness",
        "viability",
        "actionability",
        "explanations",
        "audiences",
        "audience_exports",
        "report",
        "campaign_results",
    ):
        assert graph.get(dg.AssetKey(key)).partitions_def == daily


def test_the_llm_resource_defaults_to_the_mock_and_reads_the_key_from_the_environment() -> None:
    from segmentation_pipeline.core.settings import LLM_API_KEY_VARIABLE, Settings
    from segmentation_pipeline.defs.resources import LLMResource

    default = defs.resources["llm"]
    assert default.provider == "mock"
    assert default.api_key == ""
    configured = LLMResource.from_settings(
        Settings.from_env(
            {
                "SEGMENTATION_LLM_PROVIDER": "openai",
                "SEGMENTATION_LLM_BASE_URL": "http://127.0.0.1:8000/v1",
                "SEGMENTATION_LLM_MODEL": "llama3.1:8b",
            }
        )
    )
    assert (configured.provider, configured.base_url, configured.model) == (
        "openai",
        "http://127.0.0.1:8000/v1",
        "llama3.1:8b",
    )
    # The key stays a reference to the variable until a run resolves it.
    assert configured.api_key == dg.EnvVar(LLM_API_KEY_VARIABLE)


def test_the_steps_that_ask_the_language_model_share_one_pool() -> None:
    from segmentation_pipeline.defs.assets.insights import actionability, explanations

    assert {actionability.op.pool, explanations.op.pool} == {"llm"}


def test_ingestion_steps_share_a_pool_and_steps_run_in_the_runs_process() -> None:
    from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events

    assert {raw_events.op.pool, id_history.op.pool} == {"ingestion"}
    for name in ("segmentation", "ingestion", "__ASSET_JOB"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process"


def _config_fields(parent) -> dict:
    """The fields under a node's `config` in a run config schema (none for an asset without config)."""
    config = parent.config_type.fields.get("config")
    return getattr(config.config_type, "fields", {}) if config else {}


def test_every_config_field_the_launchpad_shows_has_a_description() -> None:
    """Each asset's config and each resource's fields, as the Launchpad reads them from the job's schema."""
    schema = defs.resolve_job_def("segmentation").run_config_schema.config_type
    nodes = {f"ops.{name}": node for name, node in schema.fields["ops"].config_type.fields.items()}
    # Dagster's own io_manager (unused: every asset writes its own files) is not ours to describe.
    resources = schema.fields["resources"].config_type.fields
    nodes |= {f"resources.{name}": node for name, node in resources.items() if name != "io_manager"}
    fields = {
        f"{node_name}.{name}": field
        for node_name, node in nodes.items()
        for name, field in _config_fields(node).items()
    }
    assert [name for name, field in fields.items() if not (field.description or "").strip()] == []
    # The analysts' usual re-runs: k for clusters, bootstrap samples, viability criteria.
    assert {"ops.clusters.n_clusters", "ops.robustness.n_bootstrap", "ops.viability.min_segment_size"} <= set(fields)
    assert {"resources.llm.model", "resources.event_source.incoming_dir"} <= set(fields)
    assert len(fields) > 60


def test_the_instance_configuration_keeps_parallel_runs_apart(tmp_path: Path) -> None:
    """The repository's dagster.yaml, loaded as `make dev` loads it."""
    import shutil

    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        runs = instance.get_concurrency_config().run_queue_config
        assert runs.max_concurrent_runs == 2
        assert runs.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            {"key": "segmentation/whole_graph", "limit": 1},
        ]
        assert defs.resolve_job_def("segmentation").tags == {"segmentation/whole_graph": "true"}
        # A run whose process is gone is failed within seconds (the launcher's health check), and
        # the slots it held are freed 10 s after it ended.
        monitoring = instance.get_settings("run_monitoring")
        assert monitoring["enabled"] and monitoring["poll_interval_seconds"] == 10
        assert monitoring["free_slots_after_run_end_seconds"] == 10
        assert instance.run_launcher.__class__.__name__ == "ProcessCheckingRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        # Pools without a limit of their own (llm, ingestion) take the default: one step at a time across runs.
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"


def test_loading_the_definitions_leaves_heavy_libraries_to_the_steps_and_freezes_what_it_loaded() -> None:
    """Every run's process, the webserver and the daemon load the definitions: matplotlib, seaborn
    (2 s) and openai are imported by the steps that draw or call a provider, not by all of them."""
    probe = (
        "import gc, json, sys, segmentation_pipeline.definitions; "
        "print(json.dumps([sorted({m.split('.')[0] for m in sys.modules}), gc.get_freeze_count()]))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    modules, frozen = json.loads(result.stdout.strip().splitlines()[-1])
    loaded = set(modules)
    assert {"dagster", "duckdb", "sklearn"} <= loaded
    assert loaded.isdisjoint({"matplotlib", "seaborn", "openai"})
    # What was loaded is set apart from the garbage collector's passes.
    assert frozen > 100_000


POOLED_STEP = """
import json, sys, time
import dagster as dg

@dg.asset(pool="llm")
def asks_the_model() -> None:
    started = time.time()
    print("holding the slot", flush=True)
    time.sleep(2)
    print(json.dumps([started, time.time()]), flush=True)

with dg.DagsterInstance.get() as instance:
    assert dg.materialize([asks_the_model], instance=instance).success
"""


def test_two_runs_take_turns_at_a_step_of_the_llm_pool(tmp_path: Path) -> None:
    """The repository's dagster.yaml, in force: two runs started together, each with a step in the
    `llm` pool, run those steps one after the other."""
    import shutil

    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    # The instance and the pool's slots are made first, once, as `make dev` makes them: two runs
    # making the storage at the same moment race ("table alembic_version already exists"), and two
    # making the pool's slots each find none and each add one (Dagster 1.13, seen once in a full test
    # run). Neither race is what this test is about: the limit the repository's dagster.yaml gives
    # the pool.
    assert prepare_instance(tmp_path, {"llm"}) == {"llm": 1}
    # The second run starts once the first holds the pool's slot. Two claims at the very same
    # instant can both succeed on SQLite storage, which has no row locks: Dagster 1.13 selects a free
    # slot "for update" and then takes it by its ID alone (seen once in a clean-clone run). That race
    # is Dagster's, noted in the README; the limit is what this test is about.
    first = subprocess.Popen([sys.executable, "-c", POOLED_STEP], env=env, stdout=subprocess.PIPE, text=True)
    lines = (line.strip() for line in iter(first.stdout.readline, ""))
    assert "holding the slot" in lines, "the first run's step never started"
    runs = [first, subprocess.Popen([sys.executable, "-c", POOLED_STEP], env=env, stdout=subprocess.PIPE, text=True)]
    spans = []
    for run in runs:
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0
        spans.append(json.loads([line for line in out.splitlines() if line.startswith("[")][-1]))
    (first_start, first_end), (second_start, second_end) = sorted(spans)
    assert first_end <= second_start  # never side by side


DAEMON_INTERVAL_PROBE = """
import json, sys
import dagster as dg
import dagster._daemon.controller as controller
if len(sys.argv) > 2:
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(sys.argv[2])  # a faster loop set first (fast_daemon.py)
with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    settings = instance.get_settings("auto_materialize")
    print(json.dumps([type(instance).__name__, controller.DEFAULT_DAEMON_INTERVAL_SECONDS,
                      settings.get("minimum_interval_seconds")]))
"""


def test_the_repository_instance_shortens_the_backfill_daemons_loop_and_only_that(tmp_path: Path) -> None:
    """A daemon on the repository's dagster.yaml (as `make dev` starts it) looks for backfill work every
    5 s instead of 30; the auto-materialize daemon, which reads the same constant by default, stays at
    30; a faster loop set before (the tests' fast_daemon.py) is kept; Dagster's own instance keeps 30."""
    import shutil

    import dagster._daemon.backfill as backfill_daemon

    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    def probe(home: Path, *faster: str) -> list:
        result = subprocess.run(
            [sys.executable, "-c", DAEMON_INTERVAL_PROBE, str(home), *faster],
            capture_output=True, text=True, timeout=120, cwd=REPOSITORY,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert probe(tmp_path) == ["FastBackfillInstance", 5, 30]
    assert probe(tmp_path, "2") == ["FastBackfillInstance", 2, 30]
    assert probe(tmp_path / "plain") == ["DagsterInstance", 30, None]
    # The constant is what paces Dagster's backfill loop (read when the loop starts, after the instance).
    source = inspect.getsource(backfill_daemon.execute_backfill_iteration_loop)
    assert "from dagster._daemon.controller import DEFAULT_DAEMON_INTERVAL_SECONDS" in source
    assert "sleep_time = max(0, DEFAULT_DAEMON_INTERVAL_SECONDS - loop_duration)" in source


def test_loading_the_definitions_and_running_the_jobs_gives_no_warning_but_others_still_show() -> None:
    """Dagster's known, harmless warnings about these definitions are silenced (defs/known_warnings.py),
    narrowly: a run of the named jobs resolves them without a warning, and another warning of the same
    classes still shows."""
    probe = """
import warnings
warnings.simplefilter("default")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import segmentation_pipeline.definitions as d
    for name in ("segmentation", "snapshot", "ingestion", "erasure"):
        d.defs.resolve_job_def(name)
    d.defs.get_repository_def()
    import dagster as dg
    warnings.warn("Parameter `x` of function `y` is currently in beta", dg.BetaWarning)
    warnings.warn("another user warning", UserWarning)
print([f"{w.category.__name__}: {str(w.message)[:80]}" for w in caught])
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    shown = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own probe's list of strings
    assert shown == [
        "BetaWarning: Parameter `x` of function `y` is currently in beta",
        "UserWarning: another user warning",
    ]
    assert result.stderr == ""
