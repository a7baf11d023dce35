"""The executor of every job: Dagster's in-process executor, which first records the process that
runs the steps and ends the runs on this host whose process is gone.

Steps run in the run's own process (the graph is a chain; a process per step would import pandas,
scikit-learn and matplotlib again for each). The record (host, boot, pid, start time: see
`run_processes`) is what lets the daemon's run monitoring, and runs started later, tell that this
run died if its process is killed. Ending dead runs at the start of each run means that a run
started by hand after a crash (`dagster asset materialize`, no daemon) finds the instance as a
daemon would have left it: the dead runs failed, their pool slots free.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor.in_process import InProcessExecutor

from .run_processes import end_dead_runs, process_metadata, this_process


class RecordedInProcessExecutor(InProcessExecutor):
    """Dagster's in-process executor, with the record of its process and the clean-up of dead runs."""

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        process = this_process()
        yield DagsterEvent.engine_event(
            plan_context,
            f"Steps run in process {process.describe()}; if it dies, later runs and run monitoring "
            "mark this run failed and free its pool slots.",
            EngineEventData(metadata=process_metadata(process)),
        )
        found_by = f"run {plan_context.run_id} as it started"
        for outcome in end_dead_runs(plan_context.instance, plan_context.run_id, found_by):
            yield DagsterEvent.engine_event(plan_context, f"Ended a dead run: {outcome}.", EngineEventData())
        yield from super().execute(plan_context, execution_plan)


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
def recorded_in_process_executor(init_context: dg.InitExecutorContext) -> RecordedInProcessExecutor:
    """Execute all steps in the run's process, as Dagster's in_process executor does (same config),
    recording that process first so that a run whose process dies is found and ended."""
    dagster_executor = dg.in_process_executor.executor_creation_fn(init_context)
    return RecordedInProcessExecutor(
        retries=dagster_executor.retries, step_dependency_config=dagster_executor.step_dependency_config
    )
