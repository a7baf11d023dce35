"""Fault injection: runs of the whole graph killed with kill -9 at several points, then run again.

Each kill comes as the run's log says a step has started (in `raw_events`, which holds the
`ingestion` pool's slot; in `profiles`; in `actionability`, which holds the `llm` pool's slot);
the same `dagster asset materialize` is then started again, with no step by hand in between and no
daemon. The run that gets through must finish, the killed ones must end failed with their slots
freed, and every stored file must be byte for byte what one uninterrupted run stores.
"""

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)
from segmentation_pipeline_tests.runs import (
    REPOSITORY,
    environment,
    instance_home,
    kill,
    materialize_command,
    pool_holders,
    run_messages,
    runs,
    start,
    steps_in_flight,
    stored_files,
    wait_for_line,
)

N_CUSTOMERS = 2000
HISTORY = (date(2025, 1, 1), date(2025, 1, 30))
DAY = "2025-01-31"
#: The whole graph for the day, with a cheaper robustness than the default (both runs alike).
COMMAND = materialize_command(["*"], partition=DAY, config={"ops": {"robustness": {"config": {"n_bootstrap": 5}}}})
KILL_POINTS = ["raw_events", "profiles", "actionability"]


def setup(home: Path, data_dir: Path, history: Path) -> tuple[Path, dict[str, str]]:
    """A new instance, and the data folder holding just the ingested history."""
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(history, data_dir)
    home = instance_home(home)
    source = home.parent / "source.json"
    source.write_text(json.dumps({"n_customers": N_CUSTOMERS}))
    return home, environment(home, data_dir, SEGMENTATION_SOURCE_CONFIG=str(source))


@pytest.mark.slow
def test_runs_killed_at_several_points_recover_by_themselves_and_store_what_an_uninterrupted_run_stores(
    tmp_path: Path,
) -> None:
    # A month of history, ingested once; each of the runs below starts from a copy of it.
    history = tmp_path / "history"
    resources = {
        "warehouse": WarehouseResource(data_dir=str(history)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(n_customers=N_CUSTOMERS),
        "llm": LLMResource(),
        "webhook": WebhookResource(),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        ingested = dg.materialize(
            [raw_events, id_history], instance=instance, resources=resources, tags=range_tags(*HISTORY)
        )
        assert ingested.success

    # The run never interrupted, first: the report names its data folder, so both use the same one.
    data_dir = tmp_path / "data"
    _, reference_env = setup(tmp_path / "reference" / "dagster_home", data_dir, history)
    reference = subprocess.run(COMMAND, cwd=REPOSITORY, env=reference_env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    expected = stored_files(data_dir)
    assert len([name for name in expected if name.startswith("reports/")]) >= 8

    home, env = setup(tmp_path / "killed" / "dagster_home", data_dir, history)
    killed_runs = []
    for step in KILL_POINTS:
        process = start(COMMAND, env)
        wait_for_line(process, f" - {step} - STEP_START - ")
        kill(process)
        (run,) = [run for run in runs(home) if run.run_id not in killed_runs]
        killed_runs.append(run.run_id)
        assert step in steps_in_flight(home, run.run_id)  # killed inside the step
    assert pool_holders(home)["llm"] == [killed_runs[-1]]  # what the last kill left
    recovered = subprocess.run(COMMAND, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    assert recovered.returncode == 0, recovered.stdout[-3000:] + recovered.stderr[-3000:]

    by_id = {run.run_id: run for run in runs(home)}
    assert [by_id[run_id].status for run_id in killed_runs] == [dg.DagsterRunStatus.FAILURE] * len(KILL_POINTS)
    for run_id in killed_runs:
        assert any("is gone" in message for message in run_messages(home, run_id)), run_id
    (last,) = [run for run in by_id.values() if run.run_id not in killed_runs]
    assert last.status == dg.DagsterRunStatus.SUCCESS
    assert pool_holders(home) == {"ingestion": [], "llm": []}

    stored = stored_files(data_dir)
    assert sorted(stored) == sorted(expected)
    assert [name for name in expected if stored[name] != expected[name]] == []
