"""Are two warehouses' stored tables the same? Every Parquet file under one data folder's
`warehouse/` compared with the file of the same path under the other, with `pyarrow.Table.equals`.

    python benchmarks/compare_tables.py REFERENCE_DATA_DIR NEW_DATA_DIR [--only-new TABLE ...]

How a change that must not change a result is proven: build the same history with the code
before and after it (e.g. `bench_scale.py --phase ingest` then `--phase snapshot --repeats 1`
with a `--scratch` folder of its own, which the phases keep), then compare the two folders.
Files of a table named with `--only-new` may exist in the new folder alone (a table the change
adds); any other file on one side only, or any difference, is listed and the exit status is 1.

Two things record where the data folder is, and so differ between any two folders: string values
naming a path inside it (the exports' folders) are compared with the folder's path replaced by
`<data>`, and the report's SHA-256 in `complete_snapshots` (the report names the folder) is left
out, the reports' JSON and Markdown being compared instead, with the same replacement.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Columns that hash a file naming the data folder: the file itself is compared instead.
FOLDER_DEPENDENT = {"complete_snapshots": ["report_sha256"]}
REPORT_FILES = ("report.json", "report.md")


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
        table = name.split("/")[0]
        old_table = _without_folder(pq.read_table(before[name]), reference, table)
        new_table = _without_folder(pq.read_table(after[name]), new, table)
        if not old_table.schema.equals(new_table.schema):
            problems.append(f"{name}: schema differs\n  {old_table.schema}\n  {new_table.schema}")
        elif not old_table.equals(new_table):
            problems.append(f"{name}: rows differ ({old_table.num_rows} and {new_table.num_rows} rows)")
    for report in sorted((reference / "reports").glob("date=*/report.*")):
        relative = report.relative_to(reference)
        # Published reports only: `.versions/` holds the same files under names of their own.
        if report.name not in REPORT_FILES or any(part.startswith(".") for part in relative.parts):
            continue
        compared += 1
        other = new / relative
        if not other.exists():
            problems.append(f"only in {reference}: {relative}")
        elif report.read_text().replace(str(reference), "<data>") != other.read_text().replace(str(new), "<data>"):
            problems.append(f"{relative}: differs")
    return compared, problems


def _without_folder(table: pa.Table, data_dir: Path, name: str) -> pa.Table:
    """`table` with the data folder's path in its string values replaced by `<data>`, and the columns
    that hash a file naming the folder left out."""
    table = table.drop_columns([column for column in FOLDER_DEPENDENT.get(name, []) if column in table.column_names])
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            replaced = pc.replace_substring(table.column(index), str(data_dir), "<data>")
            table = table.set_column(index, field, replaced)
    return table


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
