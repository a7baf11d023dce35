"""The Dagster instance is made once, before any run: runs started together on a new DAGSTER_HOME all succeed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from segmentation_pipeline.definitions import defs
from segmentation_pipeline.instance import pools_of, prepare_instance

REPOSITORY = Path(__file__).resolve().parents[1]

#: One run of a cheap daily asset, started when the file named by argv[2] appears, so that
#: every run opens the instance at the same moment.
RUN_A_DAY = """
import sys, time
from pathlib import Path
import dagster as dg

@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC"))
def a_day(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"day": context.partition_key})

go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
with dg.DagsterInstance.get() as instance:
    assert dg.materialize([a_day], instance=instance, partition_key=sys.argv[1]).success
"""

DAYS = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]


def new_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEGMENTATION_", "DAGSTER_"))}
    return home, env | {"DAGSTER_HOME": str(home), "SEGMENTATION_DATA_DIR": str(tmp_path / "data")}


def test_four_runs_started_together_on_a_new_instance_all_succeed(tmp_path: Path) -> None:
    home, env = new_home(tmp_path)
    # The step `make demo`, `make dev` and `make backfill` take first (`make instance`).
    prepared = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.instance"],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prepared.returncode == 0, prepared.stderr
    assert f"Dagster instance ready in {home.resolve()} (pool slots: ingestion 1, llm 1)" in prepared.stdout
    assert "names no instance_class" not in prepared.stdout
    go = tmp_path / "go"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_A_DAY, day, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for day in DAYS
    ]
    go.touch()
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], "\n".join(outputs)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert sorted(record.dagster_run.tags["dagster/partition"] for record in records) == DAYS
        assert {record.dagster_run.status for record in records} == {dg.DagsterRunStatus.SUCCESS}
        assert instance.get_materialized_partitions(dg.AssetKey("a_day")) == set(DAYS)


def test_preparing_an_instance_again_keeps_a_raised_pool_limit(tmp_path: Path) -> None:
    home, _ = new_home(tmp_path)
    pools = pools_of(defs.assets or ())
    assert pools == {"ingestion", "llm"}
    assert prepare_instance(home, pools) == {"ingestion": 1, "llm": 1}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("llm", 4)
    assert prepare_instance(home, pools) == {"ingestion": 1, "llm": 4}


def test_an_instance_without_the_instance_class_is_said_to_store_events_one_by_one(tmp_path: Path) -> None:
    """A DAGSTER_HOME whose dagster.yaml predates the instance class (make keeps an existing one)."""
    home, env = new_home(tmp_path)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prepared = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.instance"],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prepared.returncode == 0, prepared.stderr
    assert f"It stores each run event on its own, as Dagster's own instance does: {home.resolve() / 'dagster.yaml'}" in (
        prepared.stdout
    )
