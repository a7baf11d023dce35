"""New input in the file source's incoming folder: which day folders changed, and which days to ingest.

A day folder's file set is fingerprinted by the names, sizes and modification
times of its input files, so the same files never cause a second ingestion,
while a replaced or added file does. Files still being written (modified in
the last few seconds, or named like a partial download) wait for the next look.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from .sources import EVENTS, FOLDER_SLACK_DAYS, MERGES, SUPPORTED_SUFFIXES, Contract

#: A file modified this recently may still be being written; it is looked at again later.
SETTLE_SECONDS = 15.0
#: Names that copy tools and browsers give files they have not finished.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")
_DAY_FOLDER = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class DayFolder:
    """One `<incoming>/<table>/date=YYYY-MM-DD/` folder as it is now."""

    day: date
    fingerprint: str
    files: int
    settled: bool


@dataclass
class IncomingScan:
    """The day folders of one table, and what in the incoming folder could not be used."""

    table: str
    folders: dict[date, DayFolder] = field(default_factory=dict)
    #: Entries that are not `date=YYYY-MM-DD` folders (or name no real date): never ingested.
    ignored: list[str] = field(default_factory=list)

    def changed(self, seen: Mapping[str, str]) -> list[DayFolder]:
        """Settled folders whose file set differs from the one last ingested (`seen`: day -> fingerprint)."""
        return [
            folder
            for day, folder in sorted(self.folders.items())
            if folder.settled and folder.files and seen.get(day.isoformat()) != folder.fingerprint
        ]

    def unsettled(self) -> list[date]:
        return sorted(day for day, folder in self.folders.items() if not folder.settled)


def scan_incoming(
    incoming_dir: Path, contract: Contract, now: float, settle_seconds: float = SETTLE_SECONDS
) -> IncomingScan:
    """Fingerprint every day folder of one table's incoming files (`now` is a POSIX time)."""
    scan = IncomingScan(contract.spec.name)
    table_dir = incoming_dir / contract.incoming_folder
    if not table_dir.is_dir():
        return scan
    for entry in sorted(table_dir.iterdir()):
        match = _DAY_FOLDER.match(entry.name)
        day = _date_or_none(match.group(1)) if match and entry.is_dir() else None
        if day is None:
            if not entry.name.startswith("."):
                scan.ignored.append(entry.name)
            continue
        scan.folders[day] = _fingerprint(entry, day, now, settle_seconds)
    return scan


def _fingerprint(folder: Path, day: date, now: float, settle_seconds: float) -> DayFolder:
    digest = hashlib.sha256()
    files, settled = 0, True
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if path.name.startswith("."):
            continue
        if name.endswith(PARTIAL_SUFFIXES):
            settled = False
            continue
        if not path.is_file() or not name.endswith(SUPPORTED_SUFFIXES):
            continue
        stat = path.stat()
        settled = settled and now - stat.st_mtime >= settle_seconds
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        files += 1
    return DayFolder(day, digest.hexdigest()[:20], files, settled)


def _date_or_none(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def days_to_ingest(contract: Contract, changed: Iterable[date]) -> list[date]:
    """The days whose stored rows a changed folder can alter.

    An events folder may hold rows of the UTC days either side of it (local-time
    exports), so those days are ingested again too; a merges folder holds its own day.
    """
    slack = FOLDER_SLACK_DAYS if contract is EVENTS else 0
    return sorted({day + timedelta(days=offset) for day in changed for offset in range(-slack, slack + 1)})


def contiguous_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted days as (first, last) runs of consecutive days: one ingestion run per range."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


CONTRACTS: tuple[Contract, ...] = (EVENTS, MERGES)

__all__ = [
    "CONTRACTS",
    "DayFolder",
    "IncomingScan",
    "SETTLE_SECONDS",
    "contiguous_ranges",
    "days_to_ingest",
    "scan_incoming",
]
