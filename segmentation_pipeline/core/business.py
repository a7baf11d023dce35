"""The business the engine writes for: its currency, its time zone and the channels it owns.

Money is shown with its currency everywhere (report, explanations, campaign
costs), times of day in the business's time zone, and a campaign may always go
out through an owned channel. Read from the environment once (core.settings);
the actionability stage stores them with its rubric, so that the explanations,
the checks and the report of a day all use those its answers were made with.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import PipelineError

DEFAULT_CURRENCY = "USD"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_OWNED_CHANNELS = ("email",)
#: Currencies written with their sign before the amount ("$1,234"); any other ISO code is written
#: before it with a space ("CHF 1,234"). Three signs only: those the faithfulness check reads as money.
CURRENCY_SIGNS = {"USD": "$", "EUR": "\u20ac", "GBP": "\u00a3"}
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class Business(BaseModel):
    """Currency (ISO 4217 code), time zone (IANA name) and owned channels, each validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = Field(default=DEFAULT_CURRENCY, description="ISO 4217 code of the money shown: USD, EUR, GBP...")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA time zone of campaign timings: Europe/Berlin...")
    owned_channels: tuple[str, ...] = Field(
        default=DEFAULT_OWNED_CHANNELS, description="Channels the business owns and may always send through."
    )

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        code = value.strip().upper()
        if not _CURRENCY_CODE.match(code):
            raise ValueError(f"currency {value!r} is not a three-letter ISO 4217 code such as USD or EUR")
        return code

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        name = value.strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"time zone {value!r} is not an IANA time zone name such as UTC or Europe/Berlin") from exc
        return name

    @field_validator("owned_channels")
    @classmethod
    def _channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        channels = tuple(dict.fromkeys(channel.strip().lower() for channel in value if channel.strip()))
        return channels

    # ------------------------------------------------------------------ money

    def money(self, value: float | None, decimals: int = 0) -> str:
        """'$1,235', '-$12.50', 'CHF 1,235': the amount with its currency, `decimals` after the point."""
        if value is None:
            return "n/a"
        amount = f"{abs(value):,.{decimals}f}"
        sign = "-" if value < 0 and float(amount.replace(",", "")) != 0 else ""
        symbol = CURRENCY_SIGNS.get(self.currency)
        return f"{sign}{symbol}{amount}" if symbol else f"{sign}{self.currency} {amount}"

    def unit(self) -> str:
        """How an axis or a column names the currency: '$' or 'CHF'."""
        return CURRENCY_SIGNS.get(self.currency, self.currency)

    def return_per_unit(self, roi: float | None) -> str:
        """A net ROI as a marketer reads it: 2.8 -> 'returns $3.80 per $1 spent'."""
        if roi is None:
            return "return unknown"
        return f"returns {self.money(roi + 1.0, 2)} per {self.money(1)} spent"

    # ------------------------------------------------------------------ time

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def zone_label(self) -> str:
        return "UTC" if self.timezone in ("UTC", "Etc/UTC") else self.timezone

    def local_hours(self, utc_hours: str, on: date) -> str:
        """A UTC range of hours ('06:00-12:00') in the business's time zone on `on` ('07:00-13:00')."""
        match = _HOURS.match(utc_hours)
        if match is None:
            raise PipelineError(f"hours {utc_hours!r} are not a range such as 06:00-12:00")
        start, end = (int(match.group(1)), int(match.group(2))), (int(match.group(3)), int(match.group(4)))
        last = self._local(end, on)
        # A range that ends at midnight ends at 24:00, as the day parts are written.
        return f"{self._local(start, on)}-{'24:00' if last == '00:00' else last}"

    def _local(self, hour_minute: tuple[int, int], on: date) -> str:
        hour, minute = hour_minute
        # 24:00 is the end of the day: midnight of the next.
        moment = datetime.combine(on, time(0, 0), tzinfo=ZoneInfo("UTC")) + timedelta(hours=hour, minutes=minute)
        local = moment.astimezone(self.zone)
        return f"{local.hour:02d}:{local.minute:02d}"


def business_from_env(currency: str, timezone: str, owned_channels: str) -> Business:
    """The business settings from SEGMENTATION_CURRENCY, SEGMENTATION_TIMEZONE and SEGMENTATION_OWNED_CHANNELS."""
    fields: dict[str, object] = {}
    if currency.strip():
        fields["currency"] = currency
    if timezone.strip():
        fields["timezone"] = timezone
    if owned_channels.strip():
        fields["owned_channels"] = tuple(owned_channels.split(","))
    try:
        return Business(**fields)
    except ValueError as exc:
        names = {"currency": "SEGMENTATION_CURRENCY", "timezone": "SEGMENTATION_TIMEZONE"}
        problem = "; ".join(
            f"{names.get(str(error['loc'][0]), 'SEGMENTATION_OWNED_CHANNELS')}: {error['msg'].removeprefix('Value error, ')}"
            for error in getattr(exc, "errors", lambda: [])()
        )
        raise PipelineError(problem or str(exc)) from exc
