"""Process-wide settings, read from the environment in this one place.

Every setting has a default that works on a fresh clone; everything else is
Dagster config or resource fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .errors import PipelineError

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("synthetic", "files")
LLM_PROVIDERS = ("mock", "openai")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    start_date: date
    source: str
    llm_provider: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SEGMENTATION_DATA_DIR") or REPOSITORY_ROOT / "data")
        raw_start = env.get("SEGMENTATION_START_DATE") or "2025-01-01"
        try:
            start_date = date.fromisoformat(raw_start)
        except ValueError as exc:
            raise PipelineError(
                f"SEGMENTATION_START_DATE={raw_start!r} is not a date; expected YYYY-MM-DD"
            ) from exc
        source = _choice(env, "SEGMENTATION_SOURCE", "synthetic", SOURCES)
        llm_provider = _choice(env, "SEGMENTATION_LLM_PROVIDER", "mock", LLM_PROVIDERS)
        return cls(
            data_dir=data_dir.expanduser().resolve(),
            start_date=start_date,
            source=source,
            llm_provider=llm_provider,
        )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise PipelineError(f"{name}={value!r} is not supported; expected one of {list(allowed)}")
    return value
