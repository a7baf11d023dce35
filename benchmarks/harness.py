"""What every benchmark records beside its figures: the machine, the versions and the command."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LIBRARIES = ("numpy", "pyarrow", "pandas", "duckdb", "scipy", "dagster")


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **library_versions(),
    }


def reference_seconds() -> float:
    """Seconds of one fixed piece of work (a Python loop, a sort and a matrix product, on one core).

    This machine is shared and its speed drifts by a quarter and more within an hour;
    recorded beside each timing, it tells a slow hour from a slower program.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i
    values = np.random.default_rng(0).random(2_000_000)
    np.sort(values)
    matrix = values[:1_000_000].reshape(1000, 1000)
    with threadpool_limits(1):
        matrix @ matrix
    return round(time.perf_counter() - started, 3)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def command() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def write_result(result: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
