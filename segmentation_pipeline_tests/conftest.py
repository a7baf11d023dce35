"""Shared fixtures: every test gets its own data folder; pandas copy-on-write is on.

The suite runs on the built-in defaults whatever the shell has set: settings are
read when the package is imported, so the environment is cleaned first.
"""

from __future__ import annotations

import os

for _name in [name for name in os.environ if name.startswith("SEGMENTATION_")]:
    del os.environ[_name]

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from segmentation_pipeline.core.warehouse import Warehouse  # noqa: E402

pd.set_option("mode.copy_on_write", True)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "data")
