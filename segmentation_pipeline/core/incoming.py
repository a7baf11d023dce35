"""New input in the file source's incoming folder: which day folders changed, which days to ingest,
and the kept copy of every file ingested from a day folder.

The rule for a day folder: a day is the union of every file ever ingested from
its folder, by file name. A file that disappears after ingestion (archived,
deleted by a retention job) leaves its rows stored; a file whose content is
replaced under the same name is ingested again with its new content; a new
file adds its rows. Each ingested file is kept under
`<data dir>/ingested/<table>/date=YYYY-MM-DD/<name>` and ingestion reads those
kept copies, so re-ingesting a day after its files left gives the same rows.
`retract_file` takes a kept file out of its day (the one explicit way to remove
input), after which the day is ingested again.

Each file is fingerprinted by its size and modification time, so the same
files never cause a second ingestion, while an added or replaced file does; a
removed file does not. Files still being written (modified in the last few
seconds, or named like a partial download) hold back every run that would read
their folder until the next look.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from .errors import DataValidationError
from .sources import EVENTS, FOLDER_SLACK_DAYS, MERGES, SUPPORTED_SUFFIXES, Contract, day_folder, files_of_day
from .warehouse import DAY_FOLDER

#: A file modified this recently may still be being written; it is looked at again later.
SETTLE_SECONDS = 15.0
#: Names that copy tools and browsers give files they have not finished.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")


@dataclass(frozen=True)
class DayFolder:
    """One `<incoming>/<table>/date=YYYY-MM-DD/` folder as it is now."""

    day: date
    fingerprint: str
    files: int
    settled: bool
    #: File name -> "size:modification time (ns)" of every input file in the folder.
    stamps: dict[str, str] = field(default_factory=dict)

    def has_new_input(self, seen: str | Mapping[str, str] | None) -> bool:
        """A file added or replaced since the stamps in `seen` (a removed file is not new input).

        `seen` may be the whole-folder fingerprint that cursors kept before files had stamps."""
        if isinstance(seen, str):
            return bool(self.files) and seen != self.fingerprint
        seen = seen or {}
        return any(seen.get(name) != stamp for name, stamp in self.stamps.items())


@dataclass
class IncomingScan:
    """The day folders of one table, and what in the incoming folder could not be used."""

    table: str
    folders: dict[date, DayFolder] = field(default_factory=dict)
    #: Entries that are not `date=YYYY-MM-DD` folders (or name no real date): never ingested.
    ignored: list[str] = field(default_factory=list)

    def changed(self, seen: Mapping[str, str | Mapping[str, str]]) -> list[DayFolder]:
        """Settled folders with a file added or replaced since last ingested (`seen`: day -> file stamps)."""
        return [
            folder
            for day, folder in sorted(self.folders.items())
            if folder.settled and folder.has_new_input(seen.get(day.isoformat()))
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
        match = DAY_FOLDER.match(entry.name)
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
    stamps: dict[str, str] = {}
    try:
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
            stamps[path.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files += 1
    except FileNotFoundError:
        # A file (or the folder) was moved away while we looked: look again next time.
        settled = False
    return DayFolder(day, digest.hexdigest()[:20], files, settled, stamps)


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
    slack = folder_reach(contract)
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


def folder_reach(contract: Contract) -> int:
    """How many days either side of a folder's own day its rows may lie (and, so, which folders a day reads)."""
    return FOLDER_SLACK_DAYS if contract is EVENTS else 0


@dataclass(frozen=True)
class PlannedRun:
    """One ingestion run over consecutive days, and the state of every folder it will read."""

    first: date
    last: date
    #: day -> fingerprint of the folders the run reads, as they are now.
    reads: dict[date, str]
    #: The changed folders this run ingests.
    changed: tuple[date, ...]

    @property
    def key(self) -> str:
        """Names the days and the exact files the run reads: the same state never asks twice."""
        state = "|".join(f"{day}:{fingerprint}" for day, fingerprint in sorted(self.reads.items()))
        return f"{self.first}..{self.last}:{hashlib.sha256(state.encode()).hexdigest()[:16]}"


@dataclass
class IngestionPlan:
    runs: list[PlannedRun] = field(default_factory=list)
    #: Why changed folders were not asked for this time (they are looked at again next time).
    waiting: list[str] = field(default_factory=list)
    #: Changed folders no partition can take (before the first day): recorded as seen, never ingested.
    outside: list[date] = field(default_factory=list)


def plan_ingestion(
    scan: IncomingScan, contract: Contract, seen: Mapping[str, str], first_day: date, last_day: date
) -> IngestionPlan:
    """The runs that ingest the changed, settled folders of one table between first_day and last_day.

    A run waits while any folder it would read is still being written; a folder of a day
    after last_day (today, whose partition does not exist yet) waits for its day to end.
    """
    plan = IngestionPlan()
    reach = timedelta(days=folder_reach(contract))
    changed = scan.changed(seen)
    future = [folder.day for folder in changed if folder.day > last_day]
    if future:
        plan.waiting.append(f"{scan.table} folders of days not yet ended: {[day.isoformat() for day in future]}")
    if scan.unsettled():
        plan.waiting.append(f"{scan.table} folders still being written: {[d.isoformat() for d in scan.unsettled()]}")
    ready = [folder.day for folder in changed if folder.day <= last_day]
    days = [day for day in days_to_ingest(contract, ready) if first_day <= day <= last_day]
    # A ready folder (of a day up to last_day) reaches no partition only when it lies before them all.
    plan.outside = [day for day in ready if day + reach < first_day]
    for first, last in contiguous_ranges(days):
        read_days = [day for day in scan.folders if first - reach <= day <= last + reach]
        if any(not scan.folders[day].settled for day in read_days):
            continue  # named in `waiting` above
        plan.runs.append(
            PlannedRun(
                first,
                last,
                reads={day: scan.folders[day].fingerprint for day in read_days},
                changed=tuple(day for day in ready if first - reach <= day <= last + reach),
            )
        )
    return plan


# ------------------------------------------------------------ kept input


def kept_day_folder(kept_dir: Path, contract: Contract, day: date) -> Path:
    """`<kept_dir>/<events|id_history>/date=YYYY-MM-DD/`: the kept copies of one day folder's files."""
    return day_folder(kept_dir, contract, day)


def keep_day_files(incoming_dir: Path, kept_dir: Path, contract: Contract, day: date) -> list[Path]:
    """Keep a copy of every input file now in the day's incoming folder; return every kept file of the day.

    A file whose content differs from its kept copy replaces it; kept files whose
    original has gone stay (see the module docstring). Each copy is a hard link
    where the file system allows (no space used), else a copy, and is put in place
    by a rename, so a reader sees the old copy or the new one, never half a file.
    """
    kept = kept_day_folder(kept_dir, contract, day)
    for original in files_of_day(incoming_dir, contract, day):
        copy = kept / original.name
        if copy.exists() and filecmp.cmp(original, copy, shallow=False):
            continue
        kept.mkdir(parents=True, exist_ok=True)
        temporary = kept / f".{original.name}.{uuid.uuid4().hex}.tmp"
        try:
            try:
                os.link(original, temporary)
            except OSError:
                shutil.copyfile(original, temporary)
            os.replace(temporary, copy)
        finally:
            temporary.unlink(missing_ok=True)
    return files_of_day(kept_dir, contract, day)


def retract_file(incoming_dir: Path, kept_dir: Path, contract: Contract, day: date, name: str) -> Path:
    """Take one kept file out of its day; the day must then be ingested again to drop its rows.

    Refused while the file is still in the incoming folder, where the next look would take it back.
    """
    copy = kept_day_folder(kept_dir, contract, day) / name
    if not copy.is_file():
        kept = [path.name for path in files_of_day(kept_dir, contract, day)]
        raise DataValidationError(
            f"no file {name!r} was ingested for {contract.spec.name} of {day.isoformat()}; the day's files are {kept}"
        )
    original = day_folder(incoming_dir, contract, day) / name
    if original.exists():
        raise DataValidationError(
            f"{original} is still in the incoming folder: move it away first, or it is ingested again"
        )
    copy.unlink()
    return copy


CONTRACTS: tuple[Contract, ...] = (EVENTS, MERGES)

__all__ = [
    "CONTRACTS",
    "DayFolder",
    "IncomingScan",
    "IngestionPlan",
    "PlannedRun",
    "SETTLE_SECONDS",
    "contiguous_ranges",
    "days_to_ingest",
    "folder_reach",
    "keep_day_files",
    "kept_day_folder",
    "plan_ingestion",
    "retract_file",
    "scan_incoming",
]
