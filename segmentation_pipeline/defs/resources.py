"""Resources: where the warehouse lives and where the input comes from.

Their defaults come from the environment (core.settings), read once; every
field shows with its description in the Launchpad.
"""

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from pydantic import Field, field_validator

from ..core import synthetic
from ..core.business import DEFAULT_CURRENCY, DEFAULT_OWNED_CHANNELS, DEFAULT_TIMEZONE, Business
from ..core.errors import DeliveryError, PipelineError
from ..core.identity import ResolverSettings
from ..core.ingestion import FileSourceSettings, Source
from ..core.llm.cache import AnswerCache
from ..core.llm.providers import STRUCTURED_OUTPUTS, LLMSettings
from ..core.llm.runner import Answerer
from ..core.schemas import DEFAULT_JUNK_IDS
from ..core.settings import (
    DEFAULT_START_DATE,
    LLM_API_KEY_VARIABLE,
    LLM_PROVIDERS,
    SOURCES,
    WEBHOOK_URL_VARIABLE,
    Settings,
)
from ..core.warehouse import Warehouse
from ..core.webhook import WebhookSettings
from .fields import field_of


class WarehouseResource(dg.ConfigurableResource):
    """The data folder: Parquet partitions under warehouse/, the DuckDB catalog beside them."""

    data_dir: str = Field(description="Root of the warehouse, the catalog and the reports (SEGMENTATION_DATA_DIR).")

    def warehouse(self) -> Warehouse:
        return Warehouse(self.data_dir)


class EventSourceResource(dg.ConfigurableResource):
    """Where raw events and ID merges come from: the synthetic generator or real files."""

    kind: str = Field(default="synthetic", description="'synthetic' or 'files' (SEGMENTATION_SOURCE).")
    start_date: str = Field(
        default=DEFAULT_START_DATE, description="First day of the synthetic history (SEGMENTATION_START_DATE)."
    )
    seed: int = Field(default=42, description="Seed of the synthetic population and its events.")
    n_customers: int = Field(default=20_000, description="Synthetic population size.")
    merge_probability: float = Field(
        default=0.08, description="Share of synthetic customers whose earlier ID was later merged."
    )
    bad_row_rate: float = Field(
        default=0.0005, description="Share of synthetic event rows deliberately broken to exercise quarantine."
    )
    campaign_uplift: float = Field(
        default=0.0,
        description="Synthetic source only: the true effect of a campaign, for testing campaign_results against "
        "a known answer. On each day after an export, the customers on its treatment lists visit (and so buy) "
        "at 1 + this times their usual rate (0.5: +50% orders and revenue). 0: no campaign effect.",
    )
    incoming_dir: str = Field(
        default="",
        description="Folder of real input files; empty means '<data dir>/incoming'. "
        "Per-day layout: <incoming>/events/date=YYYY-MM-DD/*.csv|*.parquet (same for id_history).",
    )
    events_path: str = Field(
        default="",
        description="A file or glob of events spanning many days, split by event date (instead of per-day folders).",
    )
    id_history_path: str = Field(
        default="", description="A file or glob of ID merge records spanning many days, split by merged_at."
    )
    event_columns: dict[str, str] = Field(
        default_factory=dict, description="Mapping from your event column names to the canonical ones."
    )
    id_history_columns: dict[str, str] = Field(
        default_factory=dict, description="Mapping from your merge column names to old_id, new_id, merged_at."
    )
    assume_timezone: str = Field(
        default="UTC", description="Time zone of timestamps without an offset (a plain date is that calendar day)."
    )
    suppression_path: str = Field(
        default="",
        description="CSV of customers never to export (customer_id, reason: unsubscribed, no_consent, erased, ...); "
        "a relative path is under the incoming folder. Empty: no suppression.",
    )
    customer_attributes_path: str = Field(
        default="",
        description="CSV or Parquet of customer attributes (customer_id; optional email, phone and "
        "consent_<channel> columns); a relative path is under the incoming folder. Empty: none.",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in SOURCES:
            raise ValueError(f"source kind {value!r} is not supported; expected one of {list(SOURCES)}")
        return value

    @field_validator("assume_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"assume_timezone {value!r} is not a time zone name like 'UTC' or 'Europe/Berlin'"
            ) from exc
        return value

    @classmethod
    def from_settings(cls, settings: Settings) -> "EventSourceResource":
        """The resource as the environment configures it; a misspelt field in the source config is an error."""
        unknown = sorted(set(settings.source_config) - set(cls.model_fields))
        if unknown:
            raise PipelineError(
                f"SEGMENTATION_SOURCE_CONFIG: unknown field(s) {unknown}; expected some of {sorted(cls.model_fields)}"
            )
        defaults = {"kind": settings.source, "start_date": settings.start_date.isoformat()}
        return cls(**(defaults | settings.source_config))

    def suppression_file(self, data_dir: Path) -> Path | None:
        return self._input_file(self.suppression_path, data_dir)

    def attributes_file(self, data_dir: Path) -> Path | None:
        return self._input_file(self.customer_attributes_path, data_dir)

    def _input_file(self, value: str, data_dir: Path) -> Path | None:
        """A path of the source settings: as given when absolute, else under the incoming folder."""
        if not value:
            return None
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        return (Path(self.incoming_dir) if self.incoming_dir else data_dir / "incoming") / path

    def source(self, data_dir: Path) -> Source:
        if self.kind == "files":
            return FileSourceSettings(
                incoming_dir=Path(self.incoming_dir) if self.incoming_dir else data_dir / "incoming",
                events_path=self.events_path,
                id_history_path=self.id_history_path,
                event_columns=dict(self.event_columns),
                id_history_columns=dict(self.id_history_columns),
                assume_timezone=self.assume_timezone,
            )
        return synthetic.SyntheticSettings(
            seed=self.seed,
            n_customers=self.n_customers,
            start_date=date.fromisoformat(self.start_date),
            merge_probability=self.merge_probability,
            bad_row_rate=self.bad_row_rate,
            campaign_uplift=self.campaign_uplift,
        )


class IdentityRulesResource(dg.ConfigurableResource):
    """Which IDs are not customers. Event validation and merge resolution share these rules."""

    junk_ids: list[str] = Field(
        default=list(DEFAULT_JUNK_IDS),
        description="IDs that mean 'no customer' (case-insensitive): their events are quarantined "
        "and their merges never followed.",
    )
    max_links_per_id: int = Field(
        default=ResolverSettings.max_links_per_id,
        description="An ID merged with more distinct IDs than this is a hub (shared device, test account), "
        "not a person: merge resolution never merges it into a customer.",
    )

    def resolver_settings(self) -> ResolverSettings:
        """The rules as merge resolution takes them (who a customer's IDs are: merge_map, erasure)."""
        return ResolverSettings(junk_ids=tuple(self.junk_ids), max_links_per_id=self.max_links_per_id)


class LLMResource(dg.ConfigurableResource):
    """The language model that judges and explains segments: the deterministic mock or an
    OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp)."""

    provider: str = field_of(LLMSettings, "provider")
    base_url: str = field_of(LLMSettings, "base_url")
    model: str = field_of(LLMSettings, "model")
    api_key: str = Field(
        default="",
        repr=False,
        description=f"API key of the openai provider. Give it as an environment variable ({LLM_API_KEY_VARIABLE} "
        "by default), never inline: it is not logged or put in metadata.",
    )
    timeout_seconds: float = field_of(LLMSettings, "timeout_seconds")
    max_retries: int = field_of(LLMSettings, "max_retries")
    backoff_seconds: float = field_of(LLMSettings, "backoff_seconds")
    max_backoff_seconds: float = field_of(LLMSettings, "max_backoff_seconds")
    max_concurrent_requests: int = field_of(LLMSettings, "max_concurrent_requests")
    answer_attempts: int = field_of(LLMSettings, "answer_attempts")
    temperature: float = field_of(LLMSettings, "temperature")
    max_tokens: int = field_of(LLMSettings, "max_tokens")
    structured_output: str = Field(
        default="json_schema", description=LLMSettings.model_fields["structured_output"].description
    )
    currency: str = Field(
        default=DEFAULT_CURRENCY,
        description="ISO 4217 code of the business's money (SEGMENTATION_CURRENCY): answers and the report write "
        "amounts in it.",
    )
    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="IANA time zone of the business (SEGMENTATION_TIMEZONE): campaign timings and day parts are "
        "written in it.",
    )
    owned_channels: list[str] = Field(
        default=list(DEFAULT_OWNED_CHANNELS),
        description="Channels the business owns (SEGMENTATION_OWNED_CHANNELS, comma-separated): a campaign may "
        "always go out through them; other channels only where the segment over-indexes on them.",
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in LLM_PROVIDERS:
            raise ValueError(f"LLM provider {value!r} is not supported; expected one of {list(LLM_PROVIDERS)}")
        return value

    @field_validator("structured_output")
    @classmethod
    def _known_output(cls, value: str) -> str:
        if value not in STRUCTURED_OUTPUTS:
            raise ValueError(
                f"structured_output {value!r} is not supported; expected one of {list(STRUCTURED_OUTPUTS)}"
            )
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        return Business(currency=value).currency

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return Business(timezone=value).timezone

    @classmethod
    def from_settings(cls, settings: Settings) -> "LLMResource":
        """The resource as the environment configures it; the key is only looked up for the openai provider."""
        business = settings.business
        fields: dict[str, object] = {
            "provider": settings.llm_provider,
            "currency": business.currency,
            "timezone": business.timezone,
            "owned_channels": list(business.owned_channels),
        }
        if settings.llm_base_url:
            fields["base_url"] = settings.llm_base_url
        if settings.llm_model:
            fields["model"] = settings.llm_model
        if settings.llm_provider == "openai":
            fields["api_key"] = dg.EnvVar(LLM_API_KEY_VARIABLE)
        return cls(**fields)

    def business(self) -> Business:
        return Business(currency=self.currency, timezone=self.timezone, owned_channels=tuple(self.owned_channels))

    def settings(self) -> LLMSettings:
        return LLMSettings(**self.model_dump(include=set(LLMSettings.model_fields)))

    def answerer(self, cache_dir: Path, read_cache: bool = True) -> Answerer:
        """Answers for one run. Valid answers are always cached; read_cache=False asks again anyway."""
        return Answerer(self.settings(), AnswerCache(cache_dir), read_cache=read_cache)


class WebhookResource(dg.ConfigurableResource):
    """Optional sink of audience exports: each campaign's changes posted in batches to a URL, signed
    with HMAC-SHA256 and keyed for idempotency (core/webhook.py). Off while `url` is empty."""

    url: str = Field(
        default="",
        description="The receiver's http(s) URL (SEGMENTATION_WEBHOOK_URL); empty means off. "
        "User, password and query string in it are never shown in logs or messages.",
    )
    secret_env_var: str = field_of(WebhookSettings, "secret_env_var")
    batch_size: int = field_of(WebhookSettings, "batch_size")
    timeout_seconds: float = field_of(WebhookSettings, "timeout_seconds")
    max_attempts: int = field_of(WebhookSettings, "max_attempts")
    backoff_seconds: float = field_of(WebhookSettings, "backoff_seconds")
    max_backoff_seconds: float = field_of(WebhookSettings, "max_backoff_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookResource":
        """The resource as the environment configures it: on when SEGMENTATION_WEBHOOK_URL is set. The
        URL is then read by Dagster at run time (dg.EnvVar), so a token in it is not shown in the UI."""
        if not settings.webhook_url:
            return cls()
        try:
            WebhookSettings(enabled=True, url=settings.webhook_url)
        except DeliveryError as exc:
            raise PipelineError(f"{WEBHOOK_URL_VARIABLE}: {exc}") from None
        return cls(url=dg.EnvVar(WEBHOOK_URL_VARIABLE))

    def settings(self) -> WebhookSettings | None:
        """The delivery settings, or None when the sink is off. A URL that is not http(s) is a
        DeliveryError here, not a config error: pydantic's would quote the URL, token and all."""
        if not self.url.strip():
            return None
        fields = self.model_dump(include=set(WebhookSettings.model_fields))
        return WebhookSettings(enabled=True, **(fields | {"url": self.url.strip()}))
