"""Faithfulness: every number an answer quotes must be one the statistics gave it.

A quoted number is supported when some number of the statistics, as given, as
a percentage, or in thousands or millions, rounds to it (to the digits quoted)
or lies within half a percent of it. Dates must be the snapshot's day; clock
times must be day-part boundaries. Small bare counts ("4 dimensions", "top 3")
are not statistics and pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

#: Bare integers up to this are counts in prose, not quoted statistics.
MAX_FREE_COUNT = 12
#: Relative difference accepted beyond rounding: "1.27M" for 1,266,347.
RELATIVE_TOLERANCE = 0.005

_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<currency>[$€£]\s?)?(?P<number>[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−]?\d+(?:\.\d+)?)"
    r"(?P<unit>\s?%|\s?percent\b|x\b|×|\s?[kK]\b|\s?M\b|\s?million\b|\s?thousand\b)?"
)
_SCALE = {"%": 0.01, "percent": 0.01, "k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}


@dataclass(frozen=True)
class Quote:
    text: str
    #: The number as written, before its unit.
    value: float
    #: Digits after the decimal point: the precision of the quote.
    decimals: int
    unit: str
    currency: bool

    @property
    def is_free_count(self) -> bool:
        return not self.unit and not self.currency and self.decimals == 0 and 0 <= self.value <= MAX_FREE_COUNT

    def readings(self) -> list[tuple[float, float]]:
        """(value, rounding tolerance) for each way the quote can be read."""
        half_step = 0.5 * 10 ** (-self.decimals)
        scale = _SCALE.get(self.unit.lower(), 1.0)
        readings = [(self.value * scale, half_step * scale)]
        if self.unit in ("%", "percent"):
            readings.append((self.value, half_step))  # the statistic may itself be in percent
        return readings


def quotes(text: str) -> Iterator[Quote]:
    """The numbers in a text, dates and clock times taken out first."""
    text = _TIME.sub(" ", _DATE.sub(" ", text))
    for match in _NUMBER.finditer(text):
        number = match.group("number").replace(",", "").replace("−", "-")
        unit = (match.group("unit") or "").strip()
        yield Quote(
            text=match.group(0).strip(),
            value=float(number),
            decimals=len(number.split(".")[1]) if "." in number else 0,
            unit="x" if unit == "×" else unit,
            currency=bool(match.group("currency")),
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
                    self.dates.update(dates_in(leaf))
                    self.times.update(times_in(leaf))
                    for quote in quotes(leaf):
                        values.update(value for value, _ in quote.readings())
        self.values = sorted(values)

    def supports(self, quote: Quote) -> bool:
        return quote.is_free_count or any(self.matches(value, step) for value, step in quote.readings())

    def matches(self, reading: float, step: float) -> bool:
        """Whether a statistic, or its negative, rounds to `reading` at `step` or lies within the tolerance."""
        for candidate in (reading, -reading):
            for value in self.values:
                difference = abs(candidate - value)
                if difference <= step * (1 + 1e-9) + 1e-12 or difference <= RELATIVE_TOLERANCE * abs(value):
                    return True
        return False

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
