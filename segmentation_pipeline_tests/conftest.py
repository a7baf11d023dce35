"""Shared fixtures: every test gets its own data folder; pandas copy-on-write is on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from segmentation_pipeline.core.warehouse import Warehouse

pd.set_option("mode.copy_on_write", True)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "data")
