"""Process-wide settings, read from the environment in this one place.

Every setting has a default that works on a fresh clone; everything else is
Dagster config or resource fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .business import Business, business_from_env
from .errors import PipelineError

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_START_DATE = "2025-01-01"
SOURCES = ("synthetic", "files")
LLM_PROVIDERS = ("mock", "openai")
#: The environment variable holding the LLM API key. Its value is read by Dagster at run
#: time (dg.EnvVar) and never stored in settings, logs or metadata.
LLM_API_KEY_VARIABLE = "SEGMENTATION_LLM_API_KEY"
#: The environment variable holding the webhook sink's URL (off when unset); the resource reads it at run time.
WEBHOOK_URL_VARIABLE = "SEGMENTATION_WEBHOOK_URL"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    start_date: date
    source: str
    llm_provider: str
    #: The last daily partition (SEGMENTATION_END_DATE), for a history that ends (a demo, a backfill of
    #: an old export); None: no end set (defs/partitions.py decides by the source).
    end_date: date | None = None
    #: Chat-completions endpoint and model of the openai provider; empty means the resource's default.
    llm_base_url: str = ""
    llm_model: str = ""
    #: Fields of the event source resource (incoming folder, column mappings, ...) from the
    #: JSON file named by SEGMENTATION_SOURCE_CONFIG; they apply to every run, scheduled ones too.
    source_config: dict[str, object] = field(default_factory=dict)
    #: Receiver of the optional webhook sink of audience exports; empty means off.
    webhook_url: str = ""
    #: Currency, time zone and owned channels (SEGMENTATION_CURRENCY, SEGMENTATION_TIMEZONE,
    #: SEGMENTATION_OWNED_CHANNELS): how money and times are shown, and where a campaign may always go.
    business: Business = field(default_factory=Business)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SEGMENTATION_DATA_DIR") or REPOSITORY_ROOT / "data")
        raw_start = env.get("SEGMENTATION_START_DATE") or DEFAULT_START_DATE
        try:
            start_date = date.fromisoformat(raw_start)
        except ValueError as exc:
            raise PipelineError(f"SEGMENTATION_START_DATE={raw_start!r} is not a date; expected YYYY-MM-DD") from exc
        source = _choice(env, "SEGMENTATION_SOURCE", "synthetic", SOURCES)
        llm_provider = _choice(env, "SEGMENTATION_LLM_PROVIDER", "mock", LLM_PROVIDERS)
        return cls(
            data_dir=data_dir.expanduser().resolve(),
            start_date=start_date,
            source=source,
            llm_provider=llm_provider,
            end_date=_end_date(env.get("SEGMENTATION_END_DATE", ""), start_date),
            llm_base_url=(env.get("SEGMENTATION_LLM_BASE_URL") or "").strip(),
            llm_model=(env.get("SEGMENTATION_LLM_MODEL") or "").strip(),
            source_config=_source_config(env.get("SEGMENTATION_SOURCE_CONFIG", "")),
            webhook_url=(env.get(WEBHOOK_URL_VARIABLE) or "").strip(),
            business=business_from_env(
                env.get("SEGMENTATION_CURRENCY", ""),
                env.get("SEGMENTATION_TIMEZONE", ""),
                env.get("SEGMENTATION_OWNED_CHANNELS", ""),
            ),
        )


def _end_date(text: str, start_date: date) -> date | None:
    if not text.strip():
        return None
    try:
        end_date = date.fromisoformat(text.strip())
    except ValueError as exc:
        raise PipelineError(f"SEGMENTATION_END_DATE={text!r} is not a date; expected YYYY-MM-DD") from exc
    if end_date < start_date:
        raise PipelineError(
            f"SEGMENTATION_END_DATE={end_date} lies before SEGMENTATION_START_DATE={start_date}: no day to build"
        )
    return end_date


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise PipelineError(f"{name}={value!r} is not supported; expected one of {list(allowed)}")
    return value


def _source_config(path_text: str) -> dict[str, object]:
    if not path_text:
        return {}
    path = Path(path_text).expanduser()
    if not path.is_absolute() and not path.exists():
        path = REPOSITORY_ROOT / path
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PipelineError(f"SEGMENTATION_SOURCE_CONFIG={path_text!r}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise PipelineError(f"SEGMENTATION_SOURCE_CONFIG={path_text!r}: not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise PipelineError(f"SEGMENTATION_SOURCE_CONFIG={path_text!r}: expected a JSON object of source fields")
    incoming = loaded.get("incoming_dir")
    if isinstance(incoming, str) and incoming and not Path(incoming).expanduser().is_absolute():
        # Relative folders are relative to the repository, like the data folder.
        loaded["incoming_dir"] = str(REPOSITORY_ROOT / incoming)
    return loaded
