"""`make retract TABLE=events DAY=YYYY-MM-DD FILE=name`: take one ingested file out of its day.

A day of the file source is the union of every file ever ingested from its
folder (core.incoming): files archived or deleted after ingestion keep their
rows. This is the one way to remove a file's rows on purpose: its kept copy is
removed, then the days it could reach are ingested again (`--no-ingest` leaves
that to you, and prints the command).
"""

import argparse
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from .core.errors import SegmentationEngineError
from .core.incoming import CONTRACTS, folder_reach, retract_file
from .core.ingestion import FileSourceSettings
from .core.settings import Settings
from .core.warehouse import Warehouse
from .defs.resources import EventSourceResource

_CONTRACTS = {contract.incoming_folder: contract for contract in CONTRACTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=sorted(_CONTRACTS), default="events", help="the incoming folder's table")
    parser.add_argument("--day", required=True, type=date.fromisoformat, help="the day folder, YYYY-MM-DD")
    parser.add_argument("--no-ingest", action="store_true", help="only remove the kept copy; print the command")
    parser.add_argument("file", help="the file's name in the day folder, e.g. shop_a.csv")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    store = Warehouse(settings.data_dir)
    source = EventSourceResource.from_settings(settings).source(store.root)
    if not isinstance(source, FileSourceSettings):
        print("the event source is not 'files' (SEGMENTATION_SOURCE): there is nothing to retract", file=sys.stderr)
        return 2
    contract = _CONTRACTS[args.table]
    try:
        removed = retract_file(source.incoming_dir, store.kept_input_dir, contract, args.day, args.file)
    except SegmentationEngineError as error:
        print(error, file=sys.stderr)
        return 1
    reach = timedelta(days=folder_reach(contract))
    first, last = args.day - reach, args.day + reach
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "segmentation_pipeline.definitions",
        "--select", contract.spec.name, "--partition-range", f"{first}...{last}",
    ]  # fmt: skip
    print(f"removed {removed}: {args.file} no longer belongs to {contract.spec.name} of {args.day}")
    if args.no_ingest:
        print("to drop its rows, ingest the days it could reach again: " + " ".join(command[1:]))
        return 0
    print(f"ingesting {first} .. {last} again")
    return subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
