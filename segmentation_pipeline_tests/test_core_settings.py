"""Settings come from the environment, in one place, with defaults for a fresh clone."""

from datetime import date
from pathlib import Path

import pytest

from segmentation_pipeline.core.business import Business
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


def test_the_business_settings_are_read_from_the_environment_with_clear_errors() -> None:
    default = Settings.from_env({})
    assert default.business == Business(currency="USD", timezone="UTC", owned_channels=("email",))
    chosen = Settings.from_env(
        {
            "SEGMENTATION_CURRENCY": "eur",
            "SEGMENTATION_TIMEZONE": "Europe/Berlin",
            "SEGMENTATION_OWNED_CHANNELS": "email, App,,email",
        }
    )
    assert chosen.business == Business(currency="EUR", timezone="Europe/Berlin", owned_channels=("email", "app"))
    with pytest.raises(PipelineError, match="SEGMENTATION_CURRENCY: currency 'euro' is not a three-letter ISO 4217"):
        Settings.from_env({"SEGMENTATION_CURRENCY": "euro"})
    with pytest.raises(PipelineError, match="SEGMENTATION_TIMEZONE: time zone 'Berlin' is not an IANA time zone"):
        Settings.from_env({"SEGMENTATION_TIMEZONE": "Berlin"})
    usd, eur, chf = Business(), Business(currency="EUR"), Business(currency="CHF")
    assert (usd.money(1234.4), usd.money(-12.5, 2), eur.money(1234.5, 2), chf.money(1234)) == (
        "$1,234",
        "-$12.50",
        "\u20ac1,234.50",
        "CHF 1,234",
    )
    assert usd.return_per_unit(2.8) == "returns $3.80 per $1 spent"
    assert usd.return_per_unit(-1.0) == "returns $0.00 per $1 spent"
    # Winter and summer in Berlin; Tokyo has no summer time.
    berlin = Business(timezone="Europe/Berlin")
    assert berlin.local_hours("06:00-12:00", date(2025, 1, 15)) == "07:00-13:00"
    assert berlin.local_hours("06:00-12:00", date(2025, 7, 15)) == "08:00-14:00"
    assert Business(timezone="Asia/Tokyo").local_hours("18:00-24:00", date(2025, 7, 15)) == "03:00-09:00"
    assert usd.local_hours("18:00-24:00", date(2025, 7, 15)) == "18:00-24:00"
