"""The suppression list: erased customers (core.erasure), whose rows ingestion drops from then on.

The list holds a salted SHA-256 of each erased ID, never the ID: keeping the IDs
of the people who asked to be forgotten would keep a record of them. Ingestion
hashes the distinct IDs of what it reads with the same salt and drops the rows
whose hash is listed. The salt is a random value in its own file beside the
list (`erasure/salt`), created with the first erasure and never changed: without
it the list matches nothing, so it is backed up with the data folder. It keeps
the hashes from being looked up in a table made for another data folder; it is
not a secret from whoever can read the folder, who can test a guessed ID.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .warehouse import (
    Warehouse,
    read_parquet_verified,
    remove_stale_temporaries,
    sql_string,
    temporary_path,
    write_parquet_atomic,
)

SALT_FILE = "salt"
LIST_FILE = "suppressed.parquet"
SCHEMA = pa.schema([pa.field("id_sha256", pa.string(), nullable=False)])


def salted_sha256(salt: str, customer_id: str) -> str:
    """The hash an ID is listed, logged and matched by: SHA-256 of the salt followed by the ID (UTF-8), as hex."""
    return hashlib.sha256((salt + customer_id).encode("utf-8")).hexdigest()


def salt_path(store: Warehouse) -> Path:
    return store.erasure_dir / SALT_FILE


def list_path(store: Warehouse) -> Path:
    return store.erasure_dir / LIST_FILE


def read_salt(store: Warehouse) -> str | None:
    """The data folder's salt; None before the first erasure."""
    try:
        return salt_path(store).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None


def ensure_salt(store: Warehouse) -> str:
    """The data folder's salt, made once (32 random bytes as hex, readable by the owner only).

    Linked into place from a finished file, so two erasures starting together agree on one salt."""
    found = read_salt(store)
    if found:
        return found
    path = salt_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        temporary.write_text(secrets.token_hex(32) + "\n", encoding="ascii")
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return read_salt(store) or ""


@dataclass(frozen=True)
class Suppression:
    """The salted hashes of every erased ID, and the salt to hash candidates with."""

    salt: str
    hashes: frozenset[str]

    @classmethod
    def load(cls, store: Warehouse) -> Suppression | None:
        """The stored list; None when no customer was ever erased (ingestion then hashes nothing)."""
        path = list_path(store)
        if not path.exists():
            return None
        salt = read_salt(store)
        if not salt:
            raise FileNotFoundError(
                f"{path} lists erased customers but their salt {salt_path(store)} is missing: without it the list "
                "matches nobody. Restore the salt file from the backup of the data folder"
            )
        return cls(salt, frozenset(read_parquet_verified(path)["id_sha256"].to_pylist()))

    def hash_sql(self, value_sql: str) -> str:
        """DuckDB SQL of an ID's salted hash, the same as `salted_sha256`."""
        return f"sha256({sql_string(self.salt)} || {value_sql})"

    def table(self) -> pa.Table:
        """The hashes as an Arrow table (id_sha256), to register with DuckDB."""
        return pa.table({"id_sha256": pa.array(sorted(self.hashes), pa.string())}, schema=SCHEMA)

    def suppressed(self, ids: Iterable[str | None]) -> set[str]:
        """The IDs of `ids` that are on the list."""
        return {value for value in set(ids) if value is not None and salted_sha256(self.salt, value) in self.hashes}

    def drop_rows(self, table: pa.Table, columns: Sequence[str]) -> tuple[pa.Table, int]:
        """`table` without the rows whose `columns` hold a suppressed ID; and how many were dropped."""
        listed = set()
        for column in columns:
            listed |= self.suppressed(pc.unique(table[column]).to_pylist())
        if not listed:
            return table, 0
        value_set = pa.array(sorted(listed), pa.string())
        hit = pc.is_in(table[columns[0]], value_set=value_set)
        for column in columns[1:]:
            hit = pc.or_(hit, pc.is_in(table[column], value_set=value_set))
        kept = table.filter(pc.invert(pc.fill_null(hit, False)))
        return kept, table.num_rows - kept.num_rows


def add_to_list(store: Warehouse, salt: str, ids: Iterable[str]) -> int:
    """Put `ids` on the suppression list (their salted hashes); returns how many were not on it yet.

    The list is written again (atomically) only when it grows, so erasing the same customers again
    changes no file."""
    current = Suppression.load(store)
    listed = set(current.hashes) if current else set()
    added = {salted_sha256(salt, value) for value in ids} - listed
    if added:
        remove_stale_temporaries([store.erasure_dir])
        table = pa.table({"id_sha256": pa.array(sorted(listed | added), pa.string())}, schema=SCHEMA)
        write_parquet_atomic(table, list_path(store))
    return len(added)


__all__ = [
    "Suppression",
    "add_to_list",
    "ensure_salt",
    "list_path",
    "read_salt",
    "salt_path",
    "salted_sha256",
]
