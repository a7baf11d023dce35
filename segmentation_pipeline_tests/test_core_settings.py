"""Settings come from the environment, in one place, with defaults for a fresh clone."""

from datetime import date
from pathlib import Path

import pytest

from segmentation_pipeline.core.errors import PipelineError
from segmentation_pipeline.core.settings import REPOSITORY_ROOT, Settings


def test_defaults_work_on_a_fresh_clone() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == REPOSITORY_ROOT / "data"
    assert settings.start_date == date(2025, 1, 1)
    assert (settings.source, settings.llm_provider) == ("synthetic", "mock")
    assert settings.source_config == {}


def test_values_are_read_and_checked(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "SEGMENTATION_DATA_DIR": str(tmp_path),
            "SEGMENTATION_START_DATE": "2024-06-30",
            "SEGMENTATION_SOURCE": "FILES",
            "SEGMENTATION_LLM_PROVIDER": "openai",
        }
    )
    assert (settings.data_dir, settings.start_date, settings.source, settings.llm_provider) == (
        tmp_path,
        date(2024, 6, 30),
        "files",
        "openai",
    )
    with pytest.raises(PipelineError, match="SEGMENTATION_START_DATE='30/06/2024' is not a date"):
        Settings.from_env({"SEGMENTATION_START_DATE": "30/06/2024"})
    with pytest.raises(
        PipelineError, match=r"SEGMENTATION_SOURCE='kafka' is not supported; expected one of \['synthetic', 'files'\]"
    ):
        Settings.from_env({"SEGMENTATION_SOURCE": "kafka"})


def test_source_config_file(tmp_path: Path) -> None:
    config = tmp_path / "source.json"
    config.write_text(
        '{"kind": "files", "incoming_dir": "data/samples/incoming", "event_columns": {"c": "customer_id"}}'
    )
    settings = Settings.from_env({"SEGMENTATION_SOURCE_CONFIG": str(config)})
    assert settings.source_config == {
        "kind": "files",
        "incoming_dir": str(REPOSITORY_ROOT / "data/samples/incoming"),
        "event_columns": {"c": "customer_id"},
    }
    config.write_text("{not json")
    with pytest.raises(PipelineError, match="not valid JSON"):
        Settings.from_env({"SEGMENTATION_SOURCE_CONFIG": str(config)})
    with pytest.raises(PipelineError, match="file not found"):
        Settings.from_env({"SEGMENTATION_SOURCE_CONFIG": str(tmp_path / "missing.json")})
