"""`make erase FILE=ids.txt`: erase customers (the right to be forgotten) from every file of the data folder.

The file holds one customer ID per line, or is a CSV file with a customer_id column. Every ID merged
with them is erased too; they go on the suppression list that ingestion applies from then on; what
was done is logged under <data dir>/erasure/log/ with salted hashes, never the IDs (core.erasure).
Running it again for the same customers changes nothing; after a stopped run it completes the
erasure. The `erasure` job in the Dagster UI does the same.
"""

import argparse
import sys
from pathlib import Path

from .core.erasure import describe, erase, read_customer_ids
from .core.errors import SegmentationEngineError
from .core.settings import Settings
from .core.warehouse import Warehouse
from .defs.resources import EventSourceResource, IdentityRulesResource


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="one customer ID per line, or a CSV file with a customer_id column")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    store = Warehouse(settings.data_dir)
    source = EventSourceResource.from_settings(settings).source(store.root)
    try:
        result = erase(
            store,
            read_customer_ids(args.file),
            source,
            IdentityRulesResource().resolver_settings(),
            progress=lambda line: print(line, flush=True),
        )
    except SegmentationEngineError as error:
        print(error, file=sys.stderr)
        return 1
    print("\n".join(describe(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
