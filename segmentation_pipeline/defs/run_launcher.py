"""The run launcher of `.dagster_home/dagster.yaml`: Dagster's default launcher, with a health check.

Run monitoring (the daemon of `make dev`) asks the run launcher whether a STARTED run's worker is
still there; Dagster 1.13's `DefaultRunLauncher` does not support the question
(`supports_check_run_worker_health` is False), so a run whose process was killed together with the
code server that launched it (`make dev` stopped hard, a reboot, the out-of-memory killer taking
both) stays STARTED: it keeps its pool slots, counts against `max_concurrent_runs` and the one run
per day, and only `max_runtime_seconds` (six hours) ends it. This launcher launches and terminates
runs exactly as the default one does and answers the health check from the process each run
recorded (`run_processes`): gone means FAILED, and run monitoring marks the run failed on its next
pass (`poll_interval_seconds`); its slots are freed `free_slots_after_run_end_seconds` later. A
run it cannot judge (another host, no record yet) is reported RUNNING: monitoring would otherwise
fail it.

Only Dagster and this module are imported, so the webserver and the daemon load it quickly.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from .run_processes import Liveness, run_liveness


class ProcessCheckingRunLauncher(dg.DefaultRunLauncher):
    """Dagster's DefaultRunLauncher, whose health check looks for each run's process on this host."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        state, process = run_liveness(self._instance, run)
        if state is Liveness.GONE and process is not None:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run's process ({process.describe()}) is gone", run_worker_id=str(process.pid)
            )
        detail = f"process {process.describe()} is {state.value}" if process else "no process recorded yet"
        return CheckRunHealthResult(WorkerStatus.RUNNING, detail)

    def get_run_worker_debug_info(self, run: dg.DagsterRun, include_container_logs: bool | None = True) -> str | None:
        state, process = run_liveness(self._instance, run)
        if process is None:
            return None
        return (
            f"The run's steps ran in process {process.describe()}, which is {state.value}: killed, out of "
            "memory, or the machine or `make dev` restarted. Its pool slots are freed shortly; run the "
            "same assets again."
        )
