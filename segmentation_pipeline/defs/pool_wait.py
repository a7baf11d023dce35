"""A step waiting for a pool slot sleeps between checks, answers SIGTERM and SIGINT, and takes back
the slots of runs whose process is gone.

Dagster 1.13.28 has two faults in the in-process executor's wait for a pool slot:

- `InstanceConcurrencyContext.interval_to_next_pending_claim_check`
  (dagster/_core/execution/plan/instance_concurrency_context.py) returns
  `min([0, *[ready_at - now for ...]])`, never above 0, and `ActiveExecution.sleep_til_ready`
  sleeps only for a positive interval: a run whose step waits for a slot loops without sleeping
  and burns a whole core until it gets one.
- While no step is running, the loop of `inner_plan_execution_iterator` never looks at the
  interrupt Dagster has captured (SIGTERM and SIGINT, a Terminate from the UI): a waiting run
  cannot be stopped.

Both go through that one method, which the executor's loop calls on every pass while a claim is
pending, so it is the one this module replaces (`apply`, called where the definitions load, so in
every run's process). The replacement returns the time until the next claim check (at most a
second, so that an interrupt is answered within about a second; the claim checks themselves keep
Dagster's back-off of 1 to 15 seconds), raises `DagsterExecutionInterruptedError` for a captured
interrupt (the run then ends failed, or canceled when it was terminated), and every few seconds
frees the slots of runs whose process is gone (`run_processes.end_dead_runs`): with no daemon (a
CLI `dagster asset materialize`) nothing else would.
"""

from __future__ import annotations

import time
import warnings

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._utils.interrupts import pop_captured_interrupt

from .run_processes import end_dead_runs

#: The Dagster releases whose wait this module was written against and checked on.
PATCHED_DAGSTER = "1.13."
#: Longest sleep between two passes of the executor's loop while a step waits for a slot.
WAKE_SECONDS = 1.0
#: How often a waiting run looks for runs whose process is gone.
SWEEP_SECONDS = 5.0

_ORIGINAL = InstanceConcurrencyContext.interval_to_next_pending_claim_check


def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    """Seconds the executor may sleep before its next pass: until the next claim check is due, at
    most WAKE_SECONDS, 0 when there is nothing to wait for or a dead run's slots were just freed."""
    if not self._pending_claims:
        return 0.0
    if pop_captured_interrupt():
        raise DagsterExecutionInterruptedError("Interrupted while waiting for a pool slot.")
    now = time.time()
    if now >= getattr(self, "_next_dead_run_sweep", 0.0):
        self._next_dead_run_sweep = now + SWEEP_SECONDS
        if _end_dead_runs(self):
            # Ask for the slots again at once rather than after the back-off.
            for step_key in list(self._pending_timeouts):
                self._pending_timeouts[step_key] = now
            return 0.0
    next_check = min(self._pending_timeouts.values(), default=now)
    return min(max(next_check - now, 0.0), WAKE_SECONDS)


def _end_dead_runs(context: InstanceConcurrencyContext) -> bool:
    instance, run_id = context._instance, context._run_id
    found_by = f"run {run_id}, which was waiting for a pool slot"
    try:
        done = end_dead_runs(instance, run_id, found_by)
    except Exception as error:  # noqa: BLE001 - a failed look-up must not end the waiting run
        instance.report_engine_event(
            f"Could not look for runs whose process is gone ({type(error).__name__}: {error}); "
            "waiting for the pool slot as before.",
            run_id=run_id,
            job_name=_job_name(instance, run_id),
        )
        return False
    for outcome in done:
        instance.report_engine_event(
            f"Took back a pool slot: {outcome}.", run_id=run_id, job_name=_job_name(instance, run_id)
        )
    return bool(done)


def _job_name(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return run.job_name if run else "unknown"


def apply() -> None:
    """Replace Dagster's method with the one above (idempotent)."""
    if not dg.__version__.startswith(PATCHED_DAGSTER):
        warnings.warn(
            f"segmentation_pipeline.defs.pool_wait was written for Dagster {PATCHED_DAGSTER}x, not "
            f"{dg.__version__}: its fix of the pool-slot wait is not applied. Check whether "
            "InstanceConcurrencyContext.interval_to_next_pending_claim_check still returns 0 or less.",
            stacklevel=2,
        )
        return
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check


def applied() -> bool:
    return InstanceConcurrencyContext.interval_to_next_pending_claim_check is interval_to_next_pending_claim_check


def original() -> object:
    """Dagster's own method, for the test that shows its fault."""
    return _ORIGINAL
