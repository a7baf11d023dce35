"""Faithfulness: every number an answer quotes must be one the statistics gave it.

A quoted number is supported when some number of the statistics, as given, as
a percentage, or in thousands or millions, rounds to it (to the digits quoted),
with the same sign. Dates must be the
snapshot's day (its year, month and day may be quoted alone); clock times
must be day-part boundaries. Small counts of things ("3 of 4 dimensions",
"2 channels", "top 3") are not statistics and pass; any other number must
come from the statistics, discounts and durations included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

#: Whole numbers up to this, counting things ("3 of 4 dimensions"), are prose, not statistics.
MAX_FREE_COUNT = 12
#: What such a count may count: the word after it (an adjective may come between), or "top" before it.
_COUNTED = re.compile(
    r"^\s*(?:[a-z]+\s+)?(?:of\b|dimensions?\b|segments?\b|channels?\b|categor(?:y|ies)\b|campaigns?\b"
    r"|recommendations?\b|tests?\b|criteri(?:on|a)\b|day parts?\b|labels?\b)",
    re.IGNORECASE,
)
_TOP = re.compile(r"\btop[\s-]?$", re.IGNORECASE)

_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<currency>[$€£]\s?)?(?P<number>[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−]?\d+(?:\.\d+)?)"
    r"(?P<unit>\s?%|\s?per\s?cent\b|x\b|×|\s?[kK]\b|\s?M\b|\s?million\b|\s?thousand\b)?"
)
_SCALE = {"%": 0.01, "percent": 0.01, "per cent": 0.01, "k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}


@dataclass(frozen=True)
class Quote:
    text: str
    #: The number as written, before its unit.
    value: float
    #: Digits after the decimal point: the precision of the quote.
    decimals: int
    unit: str
    currency: bool
    #: A small whole number counting things ("3 of 4 dimensions"): prose, not a statistic.
    is_free_count: bool = False

    def readings(self) -> list[tuple[float, float]]:
        """(value, rounding tolerance) as the statistics hold it: shares as fractions, money in full."""
        half_step = 0.5 * 10 ** (-self.decimals)
        scale = _SCALE.get(" ".join(self.unit.lower().split()), 1.0)
        return [(self.value * scale, half_step * scale)]


def quotes(text: str) -> Iterator[Quote]:
    """The numbers in a text, dates and clock times taken out first."""
    text = _TIME.sub(" ", _DATE.sub(" ", text))
    for match in _NUMBER.finditer(text):
        number = match.group("number").replace(",", "").replace("−", "-")
        unit = (match.group("unit") or "").strip()
        value = float(number)
        whole = "." not in number and not unit and not match.group("currency") and 0 <= value <= MAX_FREE_COUNT
        counting = bool(_COUNTED.match(text[match.end() :]) or _TOP.search(text[: match.start()]))
        yield Quote(
            text=match.group(0).strip(),
            value=value,
            decimals=len(number.split(".")[1]) if "." in number else 0,
            unit="x" if unit == "×" else unit,
            currency=bool(match.group("currency")),
            is_free_count=whole and counting,
        )


def dates_in(text: str) -> list[str]:
    return _DATE.findall(text)


def times_in(text: str) -> list[str]:
    """Clock times as HH:MM ("9:30" reads "09:30")."""
    return [f"{int(hour):02d}:{minute}" for hour, minute in _TIME.findall(_DATE.sub(" ", text))]


class Statistics:
    """The numbers, dates and clock times an answer may quote."""

    def __init__(self, documents: Iterable[object], dates: Iterable[str] = (), times: Iterable[str] = ()) -> None:
        values: set[float] = set()
        self.dates = set(dates)
        self.times = set(times)
        for document in documents:
            for leaf in _leaves(document):
                if isinstance(leaf, bool):
                    continue
                if isinstance(leaf, int | float):
                    if math.isfinite(leaf):
                        values.add(float(leaf))
                elif isinstance(leaf, str):
                    for day in dates_in(leaf):
                        self.dates.add(day)
                        values.update(float(part) for part in day.split("-"))  # "Q4 2025", "December 31"
                    self.times.update(times_in(leaf))
                    for quote in quotes(leaf):
                        values.update(value for value, _ in quote.readings())
        self.values = sorted(values)

    def supports(self, quote: Quote) -> bool:
        return quote.is_free_count or any(self.matches(value, step) for value, step in quote.readings())

    def matches(self, reading: float, step: float) -> bool:
        """Whether a statistic rounds to `reading` at the quote's precision `step` ("1.27M" for 1,266,347)."""
        return any(abs(reading - value) <= step * (1 + 1e-9) + 1e-12 for value in self.values)

    def problems(self, text: str, where: str) -> list[str]:
        found = []
        for day in dates_in(text):
            if day not in self.dates:
                found.append(f"{where}: date {day} is not in the statistics")
        for time in times_in(text):
            if time not in self.times:
                found.append(f"{where}: time {time} is not a day-part boundary of the statistics")
        for quote in quotes(text):
            if not self.supports(quote):
                found.append(f"{where}: {quote.text!r} is not in the statistics")
        return found


def _leaves(document: object) -> Iterator[object]:
    if isinstance(document, BaseModel):
        document = document.model_dump()
    if isinstance(document, dict):
        for value in document.values():
            yield from _leaves(value)
    elif isinstance(document, list | tuple):
        for value in document:
            yield from _leaves(value)
    else:
        yield document


def unfaithful(answer: BaseModel, statistics: Statistics, judged: Iterable[str] = ()) -> list[str]:
    """Every quoted number, date or time in the answer that the statistics do not support.

    `judged` names numeric fields that are the answer's own judgement (scores), not quotes.
    """
    skip = set(judged)
    found: list[str] = []
    for path, leaf in _fields(answer.model_dump(), ""):
        if path.rsplit(".", 1)[-1] in skip or isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, str):
            found.extend(statistics.problems(leaf, path))
        elif isinstance(leaf, int | float):
            if not statistics.matches(float(leaf), 0.5 * 10 ** (-_decimals(leaf))):
                found.append(f"{path}: {leaf} is not in the statistics")
    return found


def _decimals(value: int | float) -> int:
    if isinstance(value, int):
        return 0
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 6


def _fields(document: object, path: str) -> Iterator[tuple[str, object]]:
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _fields(value, f"{path}.{key}" if path else key)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _fields(value, f"{path}[{index}]")
    else:
        yield path, document
