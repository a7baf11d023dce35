"""Webhook delivery against a real HTTP receiver on 127.0.0.1 that fails, times out and repeats."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.core.errors import DeliveryError, SegmentationEngineError
from segmentation_pipeline.core.webhook import (
    DeliveryReport,
    WebhookDeliveryError,
    WebhookSettings,
    deliver_changes,
    make_batches,
    read_record,
    record_path,
)

from .webhook_server import WebhookServer, running_webhook

SECRET = "whsec-7f3a9c-test-secret"
ENV = {"SEGMENTATION_WEBHOOK_SECRET": SECRET}
SNAPSHOT = "2025-06-30"
CAMPAIGN = "S01-email"
#: Ten changes, given out of order: batches are cut from them sorted by their canonical JSON text, which
#: starts with customer_id (keys sorted).
ROWS = [
    {"customer_id": f"C{number:03d}", "move": "added" if number % 3 else "removed", "value": 12.5 * number}
    for number in (7, 2, 9, 4, 0, 5, 8, 1, 6, 3)
]
SORTED_IDS = [f"C{number:03d}" for number in range(10)]


def settings(server: WebhookServer, **fields: object) -> WebhookSettings:
    defaults = {"batch_size": 4, "timeout_seconds": 0.4, "max_attempts": 3, "backoff_seconds": 0.01}
    return WebhookSettings(enabled=True, url=server.url(), **(defaults | fields))


def bodies(server: WebhookServer) -> list[dict]:
    return [json.loads(request.body) for request in server.received]


def expected_key(snapshot: str, campaign: str, batch: int, rows: list[dict]) -> str:
    """The documented derivation, written out independently of the module."""
    content = hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return hashlib.sha256(f"{snapshot}|{campaign}|{batch}|{content}".encode()).hexdigest()


def test_batches_are_signed_keyed_and_recorded_as_documented(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        before = int(time.time())
        report = deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        after = int(time.time())

    assert report == DeliveryReport(
        snapshot=SNAPSHOT,
        campaign=CAMPAIGN,
        rows=10,
        batches=3,
        batches_sent=3,
        rows_sent=10,
        batches_skipped=0,
        batches_superseded=0,
        attempts=3,
        retries=0,
        record_path=tmp_path / "deliveries" / SNAPSHOT / f"{CAMPAIGN}.jsonl",
    )
    received = bodies(server)
    assert [(body["snapshot"], body["campaign"], body["batch"], body["batches"]) for body in received] == [
        (SNAPSHOT, CAMPAIGN, 1, 3),
        (SNAPSHOT, CAMPAIGN, 2, 3),
        (SNAPSHOT, CAMPAIGN, 3, 3),
    ]
    assert [row["customer_id"] for body in received for row in body["rows"]] == SORTED_IDS
    assert received[2]["rows"] == [
        {"move": "added", "value": 100.0, "customer_id": "C008"},
        {"move": "removed", "value": 112.5, "customer_id": "C009"},
    ]
    for request, body in zip(server.received, received):
        assert request.path == "/hooks/segments"
        assert request.headers["content-type"] == "application/json"
        digest = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-segmentation-signature"] == f"sha256={digest}"
        assert request.key == expected_key(SNAPSHOT, CAMPAIGN, body["batch"], body["rows"])
        assert before <= int(request.headers["x-segmentation-timestamp"]) <= after

    record = read_record(report.record_path)
    assert [
        (entry["batch"], entry["batches"], entry["rows"], entry["status"], entry["attempts"]) for entry in record
    ] == [
        (1, 3, 4, 200, 1),
        (2, 3, 4, 200, 1),
        (3, 3, 2, 200, 1),
    ]
    assert [entry["idempotency_key"] for entry in record] == [request.key for request in server.received]
    assert all(datetime.fromisoformat(entry["delivered_at"]).tzinfo == timezone.utc for entry in record)


def test_a_second_run_after_success_sends_nothing_and_keys_do_not_depend_on_row_order(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        first = deliver_changes(settings(server), tmp_path / "a", SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        keys = [request.key for request in server.received]
        again = deliver_changes(settings(server), tmp_path / "a", SNAPSHOT, CAMPAIGN, ROWS[::-1], environ=ENV)
        assert len(server.received) == 3
        # Without a record, the same rows in another order make the same requests: same keys, same bytes.
        elsewhere = deliver_changes(settings(server), tmp_path / "b", SNAPSHOT, CAMPAIGN, ROWS[::-1], environ=ENV)

    assert (first.batches_sent, again.batches_sent, again.batches_skipped, again.attempts) == (3, 0, 3, 0)
    assert elsewhere.batches_sent == 3
    assert [request.key for request in server.received[3:]] == keys
    assert [request.body for request in server.received[3:]] == [request.body for request in server.received[:3]]
    assert len(read_record(first.record_path)) == 3
    assert server.duplicates == keys  # a receiver deduping by key would ignore the second record's batches


def test_500_then_200_is_retried_with_the_same_body_and_key(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        server.queue(["500", "503", "200"])
        report = deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)

    assert [request.behaviour for request in server.received] == ["500", "503", "200", "200", "200"]
    assert len({request.key for request in server.received[:3]}) == 1
    assert len({request.body for request in server.received[:3]}) == 1
    assert (report.batches_sent, report.attempts, report.retries) == (3, 5, 2)
    assert [entry["attempts"] for entry in read_record(report.record_path)] == [3, 1, 1]


def test_429_waits_for_retry_after_up_to_the_longest_backoff(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        server.queue(["429:1"])
        patient = deliver_changes(
            settings(server, max_backoff_seconds=5), tmp_path, SNAPSHOT, "honoured", ROWS[:2], environ=ENV
        )
        waited = server.received[1].at - server.received[0].at
        server.queue(["429:120"])
        capped = deliver_changes(
            settings(server, max_backoff_seconds=0.1), tmp_path, SNAPSHOT, "capped", ROWS[:2], environ=ENV
        )
        capped_wait = server.received[3].at - server.received[2].at

    assert (patient.batches_sent, patient.retries, capped.batches_sent, capped.retries) == (1, 1, 1, 1)
    assert 1.0 <= waited < 3.0  # asked for 1 s
    assert 0.05 <= capped_wait < 1.0  # asked for 120 s, capped at 0.1 s


def test_a_stalled_answer_is_retried_and_the_receiver_can_dedupe_the_repeat(tmp_path: Path) -> None:
    with running_webhook(WebhookServer(stall_seconds=0.8)) as server:
        server.queue(["stall"])
        report = deliver_changes(settings(server, timeout_seconds=0.3), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)

    first, repeat = server.received[:2]
    assert (first.behaviour, repeat.behaviour) == ("stall", "200")
    assert repeat.key == first.key
    assert repeat.body == first.body
    # The client gave up after its timeout (0.3 s) and repeated the request before the stall (0.8 s) ended.
    # The server stamps a request when it has read it, a little after the client started its clock: on a
    # loaded machine the gap between the two stamps measured 0.295 s, so the floor leaves 50 ms for that.
    assert 0.25 <= repeat.at - first.at < 0.8
    # The receiver had processed the stalled batch: the repeat is recognised by its key.
    assert server.duplicates == [first.key]
    assert len(server.processed) == 3
    assert (report.batches_sent, report.attempts, report.retries) == (3, 4, 1)


def test_a_400_fails_at_once_names_what_failed_and_a_rerun_sends_only_the_rest(tmp_path: Path) -> None:
    rows = [{"customer_id": f"C{number:03d}", "move": "added"} for number in range(10)]
    with running_webhook(WebhookServer()) as server:
        server.queue(["200", "200", "400"])
        with pytest.raises(WebhookDeliveryError) as failure:
            deliver_changes(settings(server, batch_size=2), tmp_path, SNAPSHOT, CAMPAIGN, rows, environ=ENV)
        failed = list(server.received)
        rerun = deliver_changes(settings(server, batch_size=2), tmp_path, SNAPSHOT, CAMPAIGN, rows, environ=ENV)
        resent = server.received[len(failed) :]

    message = str(failure.value)
    assert isinstance(failure.value, DeliveryError) and isinstance(failure.value, SegmentationEngineError)
    assert failure.value.status == 400
    assert "HTTP 400: 'answer 400'" in message
    assert f"batch 3 of 5 of campaign '{CAMPAIGN}' (snapshot {SNAPSHOT})" in message
    assert server.url() in message
    assert "not retried" in message and "run again" in message
    assert (failure.value.report.batches_sent, failure.value.report.attempts) == (2, 3)
    assert [json.loads(request.body)["batch"] for request in failed] == [1, 2, 3]  # no retry of the 400

    assert [json.loads(request.body)["batch"] for request in resent] == [3, 4, 5]
    assert resent[0].key == failed[2].key
    assert (rerun.batches_skipped, rerun.batches_sent, rerun.rows_sent) == (2, 3, 6)
    assert [entry["batch"] for entry in read_record(rerun.record_path)] == [1, 2, 3, 4, 5]


def test_a_long_refusal_is_quoted_to_its_first_200_characters(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        server.queue(["long-400"])
        with pytest.raises(WebhookDeliveryError) as failure:
            deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
    assert "HTTP 400: '" + "x" * 199 + "|'." in str(failure.value)
    assert "y" * 2 not in str(failure.value)
    assert read_record(record_path(tmp_path, SNAPSHOT, CAMPAIGN)) == []


def test_the_secret_and_url_credentials_never_show_in_records_errors_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_webhook(WebhookServer(secret=SECRET)) as server:
        url = server.url().replace("http://", "http://hookuser:hookpass-4242@") + "?token=qtoken-9191"
        with_credentials = WebhookSettings(
            enabled=True, url=url, batch_size=4, timeout_seconds=0.4, max_attempts=3, backoff_seconds=0.01
        )
        server.queue(["503", "200", "200", "echo-401"])
        with pytest.raises(WebhookDeliveryError) as failure:
            deliver_changes(with_credentials, tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)

    message = str(failure.value)
    assert failure.value.status == 401
    assert server.received[-1].path == "/hooks/segments?token=qtoken-9191"
    assert server.received[-1].headers["authorization"] == "Basic aG9va3VzZXI6aG9va3Bhc3MtNDI0Mg=="
    assert "bad signature; expected one made with '[hidden]'" in message
    assert f"http://127.0.0.1:{server.port}/hooks/segments " in message
    logged = caplog.text
    assert "HTTP 503" in logged
    record_text = record_path(tmp_path, SNAPSHOT, CAMPAIGN).read_text()
    assert len(record_text.splitlines()) == 2
    for hidden in (SECRET, "hookpass-4242", "qtoken-9191", "aG9va3VzZXI6aG9va3Bhc3MtNDI0Mg=="):
        assert hidden not in message
        assert hidden not in logged
        assert hidden not in record_text
        assert hidden not in repr(failure.value.report)


def test_a_missing_secret_fails_before_anything_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_webhook(WebhookServer()) as server:
        monkeypatch.delenv("SEGMENTATION_WEBHOOK_SECRET", raising=False)
        with pytest.raises(DeliveryError, match="environment variable SEGMENTATION_WEBHOOK_SECRET"):
            deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS)
        assert server.received == []
        monkeypatch.setenv("HOOK_SECRET_B", SECRET)
        report = deliver_changes(settings(server, secret_env_var="HOOK_SECRET_B"), tmp_path, SNAPSHOT, CAMPAIGN, ROWS)
    assert report.batches_sent == 3
    assert server.received[0].headers["x-segmentation-signature"] == (
        "sha256=" + hmac.new(SECRET.encode(), server.received[0].body, hashlib.sha256).hexdigest()
    )


def test_persistent_5xx_and_a_refused_connection_give_up_after_max_attempts(tmp_path: Path) -> None:
    with running_webhook(WebhookServer(otherwise="503")) as server:
        with pytest.raises(WebhookDeliveryError, match=r"in 3 attempt\(s\); last: HTTP 503") as down:
            deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        closed_url = server.url()
        assert len(server.received) == 3
    assert down.value.status == 503
    assert (down.value.report.batches_sent, down.value.report.attempts, down.value.report.retries) == (0, 3, 2)
    assert read_record(record_path(tmp_path, SNAPSHOT, CAMPAIGN)) == []

    refused = WebhookSettings(enabled=True, url=closed_url, max_attempts=2, backoff_seconds=0.01, timeout_seconds=0.4)
    with pytest.raises(WebhookDeliveryError, match="ConnectionRefusedError") as unreachable:
        deliver_changes(refused, tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
    assert unreachable.value.status is None
    assert "run again later" in str(unreachable.value)


def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        server.queue(["302"])
        with pytest.raises(WebhookDeliveryError, match="HTTP 302.*This is a redirect, not retried") as failure:
            deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
    assert failure.value.status == 302
    assert [request.path for request in server.received] == ["/hooks/segments"]


def test_changed_rows_are_sent_again_under_a_new_key_never_skipped(tmp_path: Path) -> None:
    changed = [row | {"value": 99.0} if row["customer_id"] == "C005" else row for row in ROWS]
    with running_webhook(WebhookServer()) as server:
        deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        report = deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, changed, environ=ENV)

    resent = server.received[3:]
    assert [json.loads(request.body)["batch"] for request in resent] == [2]
    assert resent[0].key != server.received[1].key
    assert {"move": "added", "value": 62.5, "customer_id": "C005"} in json.loads(server.received[1].body)["rows"]
    assert {"move": "added", "value": 99.0, "customer_id": "C005"} in json.loads(resent[0].body)["rows"]
    assert (report.batches_skipped, report.batches_sent, report.batches_superseded) == (2, 1, 1)
    assert [entry["batch"] for entry in read_record(report.record_path)] == [1, 2, 3, 2]


def test_a_line_cut_short_by_a_crash_is_resent_and_a_damaged_line_is_an_error(tmp_path: Path) -> None:
    path = record_path(tmp_path, SNAPSHOT, CAMPAIGN)
    with running_webhook(WebhookServer()) as server:
        deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + lines[1][:30])  # batch 2 acknowledged, its line cut by a crash
        report = deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        assert [json.loads(request.body)["batch"] for request in server.received[3:]] == [2, 3]
        assert server.duplicates == [server.received[1].key, server.received[2].key]

        assert (report.batches_skipped, report.batches_sent) == (1, 2)
        assert [entry["batch"] for entry in read_record(path)] == [1, 2, 3]

        path.write_bytes(lines[0] + b"{not json\n" + lines[2])
        with pytest.raises(DeliveryError, match=re.escape(f"record {path} is damaged at line 2")):
            deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
        assert len(server.received) == 5


def test_two_runs_at_once_send_each_batch_once(tmp_path: Path) -> None:
    reports: list[DeliveryReport] = []
    with running_webhook(WebhookServer()) as server:
        runs = [
            threading.Thread(
                target=lambda: reports.append(
                    deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ=ENV)
                )
            )
            for _ in range(2)
        ]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=10)
    assert len(server.received) == 3
    assert sorted((report.batches_sent, report.batches_skipped) for report in reports) == [(0, 3), (3, 0)]


def test_off_and_empty_send_nothing_and_bad_settings_are_refused(tmp_path: Path) -> None:
    with running_webhook(WebhookServer()) as server:
        off = deliver_changes(WebhookSettings(url=server.url()), tmp_path, SNAPSHOT, CAMPAIGN, ROWS, environ={})
        empty = deliver_changes(settings(server), tmp_path, SNAPSHOT, CAMPAIGN, [], environ=ENV)
    assert server.received == []
    assert (off.batches, off.batches_sent, off.record_path) == (0, 0, None)
    assert (empty.rows, empty.batches, empty.attempts) == (0, 0, 0)
    assert not (tmp_path / "deliveries").exists() or not any((tmp_path / "deliveries").rglob("*.jsonl"))
    assert WebhookSettings().enabled is False

    with pytest.raises(DeliveryError, match="'ftp://hooks.example.com/x' is not an http"):
        WebhookSettings(enabled=True, url="ftp://user:pw@hooks.example.com/x?sig=1")
    with pytest.raises(DeliveryError, match=re.escape("campaign 'a|b' cannot name a delivery")):
        make_batches(SNAPSHOT, "a|b", ROWS, 4)


def test_rows_of_numpy_and_pandas_values_are_sent_as_plain_json() -> None:
    rows = [
        {
            "customer_id": np.str_("C1"),
            "count": np.int64(3),
            "share": np.float32(0.5),
            "churn_risk": float("nan"),
            "seen": pd.Timestamp("2025-06-30 12:00", tz="UTC"),
            "exported": np.datetime64("2025-06-30"),
            "since": date(2025, 1, 2),
            "lapsed": pd.NaT,
            "consent": pd.NA,
            "active": np.bool_(True),
        }
    ]
    (batch,) = make_batches(SNAPSHOT, CAMPAIGN, rows, 500)
    assert json.loads(batch.body)["rows"] == [
        {
            "active": True,
            "churn_risk": None,
            "consent": None,
            "count": 3,
            "customer_id": "C1",
            "exported": "2025-06-30",
            "lapsed": None,
            "seen": "2025-06-30T12:00:00+00:00",
            "share": 0.5,
            "since": "2025-01-02",
        }
    ]
    with pytest.raises(DeliveryError, match="row 0, column 'segment': a value of type object cannot be sent as JSON"):
        make_batches(SNAPSHOT, CAMPAIGN, [{"segment": object()}], 500)
