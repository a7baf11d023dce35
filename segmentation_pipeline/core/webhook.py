"""Webhook delivery: each campaign's changes posted in signed batches to a receiver's URL.

The wire format, which a receiver relies on:

- One POST per batch, `Content-Type: application/json`, body
  `{"batch": n, "batches": N, "campaign": ..., "rows": [...], "snapshot": ...}`
  (UTF-8, keys sorted, no spaces). Batches are numbered from 1. The rows are
  put in a stable order first (sorted by their canonical JSON text), so the
  same rows always make the same batches, whatever order they were given in.
- `X-Segmentation-Signature: sha256=<hex>`: the HMAC-SHA256 of the exact body
  bytes, keyed with the secret. The receiver recomputes it over the bytes it
  received, before parsing them, and compares in constant time.
- `Idempotency-Key: <hex>`: SHA-256 of the UTF-8 text
  `<snapshot>|<campaign>|<batch number>|<content hash>`, where the content hash
  is the SHA-256 hex of the batch's `rows` array serialised as in the body. A
  retry, and a re-run, send the same key with the same body: the receiver
  processes a key once and answers 2xx to a repeat.
- `X-Segmentation-Timestamp`: Unix seconds when the attempt was sent (not
  covered by the signature; a replayed body carries a key already processed).

Retried, with exponential backoff: connection errors, timeouts, 408, 429
(honouring Retry-After, up to `max_backoff_seconds`) and 5xx. Any other answer
that is not 2xx (other 4xx, a redirect) fails the delivery at once: retrying
cannot mend a wrong URL, secret or payload.

Every acknowledged batch is appended to a record, `<record_dir>/deliveries/
<snapshot>/<campaign>.jsonl` (one JSON line per batch, fsynced before the next
batch is sent), and a re-run skips the batches recorded there. A run killed
between the receiver's 2xx and the record's line sends that batch again, under
the same key, for the receiver to recognise. The secret is read from the
environment when delivering and is never written to the record, a log or a
message.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from .errors import DeliveryError

#: The environment variable holding the signing secret, unless the settings name another.
DEFAULT_SECRET_VARIABLE = "SEGMENTATION_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Segmentation-Signature"
TIMESTAMP_HEADER = "X-Segmentation-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The record's folder under record_dir.
RECORD_FOLDER = "deliveries"
#: Statuses worth another attempt besides 5xx: the server timed the request out, or is rate limiting.
RETRIED_STATUSES = frozenset({408, 429})
#: How much of a refusing answer's body goes into the error.
BODY_EXCERPT = 200

logger = logging.getLogger(__name__)


class WebhookSettings(BaseModel):
    """Where changes go and how patiently. Off unless `enabled`; the secret itself is never a setting."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=False, description="Post changes to the webhook; off by default.")
    url: str = Field(
        default="",
        description="The receiver's http(s) URL. User and password in it are sent as Basic authentication; "
        "neither they nor the query string are ever shown in messages.",
    )
    secret_env_var: str = Field(
        default=DEFAULT_SECRET_VARIABLE,
        min_length=1,
        description="Name of the environment variable holding the HMAC-SHA256 signing secret (read when "
        "delivering, never logged or stored).",
    )
    batch_size: int = Field(default=500, ge=1, description="Rows per POST.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Seconds to wait for the receiver's answer.")
    max_attempts: int = Field(
        default=5, ge=1, description="Attempts per batch, the first included, before a 429, 5xx or timeout fails it."
    )
    backoff_seconds: float = Field(
        default=1.0, ge=0, description="First wait before a retry; doubles with each retry, with jitter."
    )
    max_backoff_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait before a retry, a server's Retry-After included."
    )

    def model_post_init(self, __context: object) -> None:
        if not self.enabled:
            return
        parts = urlsplit(self.url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            parts = parts._replace(scheme="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(
                f"webhook url {self.display_url!r} is not an http(s) URL with a host; "
                "set the webhook resource's url to the receiver's address, e.g. https://hooks.example.com/segments"
            )

    @property
    def display_url(self) -> str:
        """The URL as it may be shown: without user, password, query string or fragment."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        netloc = f"{host}:{port}" if port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def secret(self, environ: Mapping[str, str] | None = None) -> str:
        """The signing secret from its environment variable; a missing or empty one is an error."""
        value = (os.environ if environ is None else environ).get(self.secret_env_var, "")
        if not value:
            raise DeliveryError(
                f"webhook delivery to {self.display_url} is on, but the environment variable "
                f"{self.secret_env_var} that holds its signing secret is not set or empty; set it (in the "
                "environment of the Dagster code server and runs) to the secret the receiver verifies with"
            )
        return value


@dataclass(frozen=True)
class DeliveryReport:
    """What one call of deliver_changes did for one campaign of one snapshot."""

    snapshot: str
    campaign: str
    #: Rows given, and batches they make.
    rows: int
    batches: int
    #: Batches acknowledged by the receiver in this call, and their rows.
    batches_sent: int
    rows_sent: int
    #: Batches found in the record (same key) and not sent again.
    batches_skipped: int
    #: Of batches_sent: batch numbers recorded earlier with other rows (the changes differ since), sent
    #: again under their new key.
    batches_superseded: int
    #: HTTP requests made, and how many of them repeated a batch's request after a failed attempt.
    attempts: int
    retries: int
    #: The delivery record, or None when delivery is off.
    record_path: Path | None

    def as_metadata(self) -> dict[str, object]:
        """Plain values, for an asset's metadata."""
        return {
            "snapshot": self.snapshot,
            "campaign": self.campaign,
            "rows": self.rows,
            "batches": self.batches,
            "batches_sent": self.batches_sent,
            "rows_sent": self.rows_sent,
            "batches_skipped": self.batches_skipped,
            "batches_superseded": self.batches_superseded,
            "attempts": self.attempts,
            "retries": self.retries,
            "record_path": str(self.record_path) if self.record_path else "",
        }


class WebhookDeliveryError(DeliveryError):
    """A batch was refused (4xx, a redirect) or never acknowledged. `status` is the last HTTP status
    (None after a timeout or connection error); `report` counts what was delivered before it."""

    def __init__(self, message: str, status: int | None, report: DeliveryReport) -> None:
        super().__init__(message)
        self.status = status
        self.report = report


@dataclass(frozen=True)
class Batch:
    """One POST: its number (from 1), the exact body bytes and the key they are delivered under."""

    number: int
    rows: int
    content_sha256: str
    idempotency_key: str
    body: bytes


def idempotency_key(snapshot: str, campaign: str, batch: int, content_sha256: str) -> str:
    """SHA-256 hex of `<snapshot>|<campaign>|<batch>|<content hash>` in UTF-8."""
    return hashlib.sha256(f"{snapshot}|{campaign}|{batch}|{content_sha256}".encode()).hexdigest()


def signature(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does with the signature header (in constant time)."""
    return hmac.compare_digest(signature(secret, body), header)


def make_batches(snapshot: str, campaign: str, rows: Sequence[Mapping[str, object]], batch_size: int) -> list[Batch]:
    """The rows in their stable order (sorted by canonical JSON), cut into batches of batch_size."""
    _check_name("snapshot", snapshot)
    _check_name("campaign", campaign)
    texts = sorted(_json(_plain_row(row, index)) for index, row in enumerate(rows))
    chunks = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    batches = []
    for number, chunk in enumerate(chunks, start=1):
        rows_json = "[" + ",".join(chunk) + "]"
        content = hashlib.sha256(rows_json.encode()).hexdigest()
        # The body is built from the rows' text as they were hashed, so the hash is of the bytes sent.
        body = (
            f'{{"batch":{number},"batches":{len(chunks)},"campaign":{_json(campaign)},'
            f'"rows":{rows_json},"snapshot":{_json(snapshot)}}}'
        ).encode()
        batches.append(Batch(number, len(chunk), content, idempotency_key(snapshot, campaign, number, content), body))
    return batches


def record_path(record_dir: Path, snapshot: str, campaign: str) -> Path:
    """`<record_dir>/deliveries/<snapshot>/<campaign>.jsonl`, names percent-encoded to be file names."""
    return Path(record_dir) / RECORD_FOLDER / quote(snapshot, safe="") / f"{quote(campaign, safe='')}.jsonl"


def read_record(path: Path) -> list[dict]:
    """The delivered batches of a record, oldest first. A last line cut short by a crash is not a
    delivery (its batch is sent again under the same key); a damaged line before it is an error."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    complete = lines[:-1]  # after the last newline: empty, or a line a crash cut short
    entries = []
    for number, line in enumerate(complete, start=1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("idempotency_key"), str):
                raise ValueError("not a delivery")
        except ValueError:
            raise DeliveryError(
                f"the webhook delivery record {path} is damaged at line {number}; it says which batches "
                "the receiver has: mend or delete that line (its batch is then sent again, under the same "
                "idempotency key) and run again"
            ) from None
        entries.append(entry)
    return entries


def deliver_changes(
    settings: WebhookSettings,
    record_dir: Path,
    snapshot: str,
    campaign: str,
    rows: Sequence[Mapping[str, object]],
    *,
    environ: Mapping[str, str] | None = None,
) -> DeliveryReport:
    """Post one campaign's changes of one snapshot to the webhook, in batches, each batch once.

    Rows are plain values (str, int, float, bool, None, dates and datetimes as ISO text, numpy
    scalars; NaN and NaT become null). Batches already in the record under the same idempotency
    key are skipped, so a re-run after a success sends nothing, and after a failure sends only the
    batches not yet acknowledged. If the rows changed since a batch was delivered, its content
    hash, and so its key, differ: it is sent again as a new delivery (counted in
    `batches_superseded`), never skipped silently; the receiver then holds both versions of that
    batch number and should let the newer key replace the older (`batches` in the body says how
    many the snapshot now has). No rows make no batches: nothing is sent.

    Deliveries of one campaign and snapshot take turns behind a lock file beside the record, so
    two runs never send the same batch side by side. With `settings.enabled` False nothing is
    sent or written and the report counts zero batches.

    Raises WebhookDeliveryError on a refusal (4xx other than 408/429, a redirect) at once, and
    when a batch is not acknowledged in `max_attempts`; DeliveryError when the secret is missing.
    """
    if not settings.enabled:
        return DeliveryReport(snapshot, campaign, len(rows), 0, 0, 0, 0, 0, 0, 0, None)
    secret = settings.secret(environ)
    batches = make_batches(snapshot, campaign, rows, settings.batch_size)
    path = record_path(record_dir, snapshot, campaign)
    report = DeliveryReport(snapshot, campaign, len(rows), len(batches), 0, 0, 0, 0, 0, 0, path)
    if not batches:
        return report
    sender = _Sender(settings, secret)
    with _record_lock(path):
        _drop_torn_tail(path)
        recorded = read_record(path)
        delivered_keys = {entry["idempotency_key"] for entry in recorded}
        delivered_numbers = {entry.get("batch") for entry in recorded}
        for batch in batches:
            if batch.idempotency_key in delivered_keys:
                report = replace(report, batches_skipped=report.batches_skipped + 1)
                continue
            status, attempts = sender.deliver(batch, report)
            _append(path, _record_line(batch, len(batches), status, attempts))
            report = replace(
                report,
                batches_sent=report.batches_sent + 1,
                rows_sent=report.rows_sent + batch.rows,
                batches_superseded=report.batches_superseded + (batch.number in delivered_numbers),
                attempts=report.attempts + attempts,
                retries=report.retries + attempts - 1,
            )
    return report


@dataclass(frozen=True)
class _Answer:
    status: int | None
    body: str = ""
    retry_after: float | None = None
    #: What went wrong without an HTTP answer (timeout, refused connection).
    problem: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it came (an error): a signed POST must not be re-sent elsewhere or
    turned into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Sender:
    def __init__(self, settings: WebhookSettings, secret: str) -> None:
        self.settings = settings
        self._secret = secret
        parts = urlsplit(settings.url)
        self._headers = {"Content-Type": "application/json", "User-Agent": "segmentation-pipeline-webhook/1"}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
            netloc = parts.netloc.rpartition("@")[2]
            self._url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        else:
            self._url = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        #: Whatever must never show in a message: the secret, the password, the query string, and the
        #: Basic credentials a receiver might quote back.
        authorization = self._headers.get("Authorization", "").removeprefix("Basic ")
        self._hidden = [text for text in (secret, parts.password, parts.query, authorization) if text]
        self._opener = urllib.request.build_opener(_NoRedirects)

    def deliver(self, batch: Batch, progress: DeliveryReport) -> tuple[int, int]:
        """The acknowledging status and the attempts it took; raises when the batch is refused or
        never acknowledged."""
        settings = self.settings
        jitter = random.Random(batch.idempotency_key)
        answer = _Answer(None)
        for attempt in range(1, settings.max_attempts + 1):
            if attempt > 1:
                time.sleep(self._backoff(attempt - 1, answer.retry_after, jitter))
            answer = self._post(batch)
            if answer.status is not None and 200 <= answer.status < 300:
                return answer.status, attempt
            if answer.status is not None and not _retried(answer.status):
                raise WebhookDeliveryError(
                    self._refused(batch, progress, answer), answer.status, _spent(progress, attempt)
                )
            logger.warning(
                "webhook %s: batch %d of campaign %r (snapshot %s), attempt %d of %d: %s",
                settings.display_url,
                batch.number,
                progress.campaign,
                progress.snapshot,
                attempt,
                settings.max_attempts,
                self._describe(answer),
            )
        raise WebhookDeliveryError(
            self._unavailable(batch, progress, answer), answer.status, _spent(progress, settings.max_attempts)
        )

    def _post(self, batch: Batch) -> _Answer:
        headers = self._headers | {
            IDEMPOTENCY_HEADER: batch.idempotency_key,
            SIGNATURE_HEADER: signature(self._secret, batch.body),
            TIMESTAMP_HEADER: str(int(time.time())),
        }
        request = urllib.request.Request(self._url, data=batch.body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.settings.timeout_seconds) as response:
                return _Answer(response.status, _excerpt(response.read(4 * BODY_EXCERPT)))
        except urllib.error.HTTPError as exc:
            try:
                body = _excerpt(exc.read(4 * BODY_EXCERPT))
            except (OSError, HTTPException):
                body = ""
            return _Answer(exc.code, body, _retry_after(exc.headers.get("Retry-After")))
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                return _Answer(None, problem=f"no answer within {self.settings.timeout_seconds:g} s")
            return _Answer(None, problem=self._redact(f"{type(reason).__name__}: {reason}"))

    def _backoff(self, retry: int, retry_after: float | None, jitter: random.Random) -> float:
        """Exponential backoff, each wait drawn from its upper half (seeded by the batch's key, so it is
        reproducible yet differs between batches); a Retry-After is honoured up to the longest wait."""
        wait = self.settings.backoff_seconds * 2 ** (retry - 1) * (0.5 + 0.5 * jitter.random())
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.settings.max_backoff_seconds)

    def _describe(self, answer: _Answer) -> str:
        if answer.status is None:
            return answer.problem
        body = f": {self._redact(answer.body)[:BODY_EXCERPT]!r}" if answer.body else ""
        return f"HTTP {answer.status}{body}"

    def _redact(self, text: str) -> str:
        for hidden in self._hidden:
            text = text.replace(hidden, "[hidden]")
        return text

    def _refused(self, batch: Batch, progress: DeliveryReport, answer: _Answer) -> str:
        kind = "a redirect" if 300 <= (answer.status or 0) < 400 else "a refusal"
        return (
            f"the webhook at {self.settings.display_url} refused batch {batch.number} of {progress.batches} of "
            f"campaign {progress.campaign!r} (snapshot {progress.snapshot}) with {self._describe(answer)}. "
            f"This is {kind}, not retried: check the URL, the secret in {self.settings.secret_env_var} and what "
            f"the receiver expects, then run again. {_progress(progress)}"
        )

    def _unavailable(self, batch: Batch, progress: DeliveryReport, answer: _Answer) -> str:
        return (
            f"the webhook at {self.settings.display_url} did not accept batch {batch.number} of "
            f"{progress.batches} of campaign {progress.campaign!r} (snapshot {progress.snapshot}) in "
            f"{self.settings.max_attempts} attempt(s); last: {self._describe(answer)}. The receiver is down or "
            "overloaded: run again later (or raise max_attempts, backoff_seconds). " + _progress(progress)
        )


def _progress(progress: DeliveryReport) -> str:
    return (
        f"Batches delivered before it ({progress.batches_sent} now, {progress.batches_skipped} earlier) are "
        f"recorded in {progress.record_path} and will not be sent again."
    )


def _spent(progress: DeliveryReport, attempts: int) -> DeliveryReport:
    """The report at a failure: the failed batch's attempts counted, nothing more delivered."""
    return replace(progress, attempts=progress.attempts + attempts, retries=progress.retries + attempts - 1)


def _retried(status: int) -> bool:
    return status in RETRIED_STATUSES or status >= 500


def _retry_after(header: str | None) -> float | None:
    """Retry-After as seconds, from a number or an HTTP date."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _excerpt(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _record_line(batch: Batch, batches: int, status: int, attempts: int) -> bytes:
    entry = {
        "batch": batch.number,
        "batches": batches,
        "idempotency_key": batch.idempotency_key,
        "content_sha256": batch.content_sha256,
        "rows": batch.rows,
        "status": status,
        "attempts": attempts,
        "delivered_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    return (json.dumps(entry, sort_keys=True) + "\n").encode()


def _append(path: Path, line: bytes) -> None:
    """One line added and on disk before the next batch is sent (a new file's folder entry too)."""
    new = not path.exists()
    with open(path, "ab") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    if new:
        _fsync_folder(path.parent)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line a crash left without its newline, so the next line starts on its own."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            os.fsync(handle.fileno())


@contextmanager
def _record_lock(path: Path) -> Iterator[None]:
    """The campaign's delivery lock, `.<campaign>.jsonl.lock` beside the record; the kernel's (flock),
    so a killed run holds it no longer than its process lives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_name(what: str, name: str) -> None:
    """Snapshot and campaign name a file and are joined by `|` in the key: keep both unambiguous."""
    if not name or name in (".", "..") or "|" in name or any(ord(char) < 32 for char in name):
        raise DeliveryError(
            f"webhook {what} {name!r} cannot name a delivery: it must be non-empty, not '.' or '..', "
            "without '|' or control characters"
        )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _plain_row(row: Mapping[str, object], index: int) -> dict[str, object]:
    return {str(column): _plain(value, column, index) for column, value in row.items()}


def _plain(value: object, column: object, index: int) -> object:
    """A JSON value: numpy scalars unwrapped, dates as ISO text, NaN and NaT as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise DeliveryError(f"webhook row {index}, column {column!r}: {value} cannot be sent as JSON")
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return None if value != value else value.isoformat()  # pandas' NaT is a datetime unequal to itself
    if isinstance(value, Mapping):
        return {str(key): _plain(item, column, index) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, column, index) for item in value]
    if value is getattr(sys.modules.get("pandas"), "NA", None):
        return None
    dtype = getattr(value, "dtype", None)
    if dtype is not None and getattr(value, "shape", None) == ():  # numpy scalars
        if dtype.kind in "mM":  # datetime64 and timedelta64: their item() may be a bare integer
            return None if value != value else str(value)
        return _plain(value.item(), column, index)
    raise DeliveryError(
        f"webhook row {index}, column {column!r}: a value of type {type(value).__name__} cannot be sent as JSON; "
        "give rows of plain values (str, int, float, bool, None, dates)"
    )
