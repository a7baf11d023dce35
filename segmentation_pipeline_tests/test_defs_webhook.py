"""The webhook resource: off by default, on from SEGMENTATION_WEBHOOK_URL, read at run time."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.core.errors import DeliveryError, PipelineError
from segmentation_pipeline.core.settings import Settings
from segmentation_pipeline.core.webhook import WebhookSettings, deliver_changes
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.resources import WebhookResource

from .webhook_server import WebhookServer, running_webhook


def test_the_definitions_hold_the_webhook_off() -> None:
    webhook = defs.resources["webhook"]
    assert isinstance(webhook, WebhookResource)
    assert webhook.url == ""
    assert webhook.settings() is None


def test_the_resource_gives_the_core_settings_with_its_defaults() -> None:
    settings = WebhookResource(url=" https://hooks.example.com/segments ", batch_size=100).settings()
    assert settings == WebhookSettings(
        enabled=True,
        url="https://hooks.example.com/segments",
        secret_env_var="SEGMENTATION_WEBHOOK_SECRET",
        batch_size=100,
        timeout_seconds=10.0,
        max_attempts=5,
        backoff_seconds=1.0,
        max_backoff_seconds=30.0,
    )
    with pytest.raises(DeliveryError, match="'ftp://hooks.example.com/x' is not an http"):
        WebhookResource(url="ftp://hooks.example.com/x?token=t0k").settings()


def test_a_bad_url_in_the_environment_fails_the_definitions_without_showing_its_token() -> None:
    bad = Settings.from_env({"SEGMENTATION_WEBHOOK_URL": "hooks.example.com/x?token=t0k"})
    with pytest.raises(PipelineError, match="SEGMENTATION_WEBHOOK_URL") as failure:
        WebhookResource.from_settings(bad)
    assert "t0k" not in str(failure.value)


def test_the_url_from_the_environment_is_read_when_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = []

    @dg.asset
    def campaign_changes(webhook: WebhookResource) -> None:
        settings = webhook.settings()
        assert settings is not None
        reports.append(deliver_changes(settings, tmp_path, "2025-06-30", "S01-email", [{"customer_id": "C1"}]))

    with running_webhook(WebhookServer()) as server:
        monkeypatch.setenv("SEGMENTATION_WEBHOOK_URL", server.url() + "?token=t0k")
        monkeypatch.setenv("SEGMENTATION_WEBHOOK_SECRET", "whsec-defs")
        resource = WebhookResource.from_settings(Settings.from_env())
        assert resource.url == "SEGMENTATION_WEBHOOK_URL"  # the variable's name, not its value
        assert dg.materialize([campaign_changes], resources={"webhook": resource}).success

    assert [request.path for request in server.received] == ["/hooks/segments?token=t0k"]
    assert (reports[0].batches_sent, reports[0].rows_sent) == (1, 1)
