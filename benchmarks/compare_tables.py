"""Are two warehouses' stored tables the same? Every Parquet file under one data folder's
`warehouse/` compared with the file of the same path under the other, with `pyarrow.Table.equals`.

    python benchmarks/compare_tables.py REFERENCE_DATA_DIR NEW_DATA_DIR [--only-new TABLE ...]

How a change that must not change a result is proven: build the same history with the code
before and after it (e.g. `bench_scale.py --phase ingest` then `--phase snapshot --repeats 1`
with a `--scratch` folder of its own, which the phases keep), then compare the two folders.
Files of a table named with `--only-new` may exist in the new folder alone (a table the change
adds); any other file on one side only, or any difference, is listed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq


def parquet_files(data_dir: Path) -> dict[str, Path]:
    """Relative path -> file, for every stored Parquet file (temporary files left out)."""
    root = data_dir / "warehouse"
    if not root.is_dir():
        raise SystemExit(f"{data_dir} holds no warehouse/ folder: not a data folder")
    return {
        str(path.relative_to(root)): path
        for path in sorted(root.rglob("*.parquet"))
        if not path.name.startswith(".")
    }


def differences(reference: Path, new: Path, only_new: set[str]) -> tuple[int, list[str]]:
    """(files compared, what differs)."""
    before, after = parquet_files(reference), parquet_files(new)
    problems = [f"only in {reference}: {name}" for name in sorted(set(before) - set(after))]
    problems += [
        f"only in {new}: {name}"
        for name in sorted(set(after) - set(before))
        if name.split("/")[0] not in only_new
    ]
    compared = 0
    for name in sorted(set(before) & set(after)):
        compared += 1
        old_table, new_table = pq.read_table(before[name]), pq.read_table(after[name])
        if not old_table.schema.equals(new_table.schema):
            problems.append(f"{name}: schema differs\n  {old_table.schema}\n  {new_table.schema}")
        elif not old_table.equals(new_table):
            problems.append(f"{name}: rows differ ({old_table.num_rows} and {new_table.num_rows} rows)")
    return compared, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--only-new", nargs="*", default=[], help="tables that only the new folder may have")
    arguments = parser.parse_args()
    compared, problems = differences(arguments.reference, arguments.new, set(arguments.only_new))
    for problem in problems:
        print(problem)
    print(f"{compared} files compared, {len(problems)} differences")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
