"""Folders published in one step: `<parent>/<name>` is a symbolic link to a complete version.

Each publication writes a new folder under `<parent>/.versions/`, then replaces the link in
one rename. A reader sees the previous version or the new one, never a mix or nothing, and
a file the new version no longer holds does not linger. Versions a killed run left behind
are removed by the next publication of that name.

Publications of one name take turns, behind a lock file of that name: two runs would
otherwise each take the other's version, being written, for a leftover and remove it. The
last to publish wins. The lock is the kernel's (flock), so a killed run holds it no longer
than its process lives. The reports (core.reporting.publish) and the audience exports
(core.activation) are published so.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

VERSIONS = ".versions"

Written = TypeVar("Written")


def publish_version(folder: Path, write: Callable[[Path], Written]) -> Written:
    """`write` the files of a new version into an empty folder, then make `folder` point to it."""
    versions = folder.parent / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    with _publishing(versions, folder.name):
        version = versions / f"{folder.name}.{uuid.uuid4().hex}"
        version.mkdir()
        try:
            written = write(version)
            _point_to(folder, version)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        _remove_superseded(versions, folder)
    return written


@contextmanager
def _publishing(versions: Path, name: str) -> Iterator[None]:
    """Hold the name's publication lock: `.versions/.<name>.lock` (never taken for a version)."""
    with (versions / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_superseded(versions: Path, link: Path) -> None:
    """Remove every version of the name but the one `link` points to: the replaced ones, and those
    a killed run left behind. Called under the name's lock, so none of them is being written."""
    current = link.resolve()
    for version in versions.glob(f"{link.name}.*"):
        if version != current:
            shutil.rmtree(version, ignore_errors=True)


def _point_to(link: Path, version: Path) -> None:
    """Make `link` a symbolic link to `version`, replacing what was there in one rename."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex}.link")
    os.symlink(version.relative_to(link.parent), temporary, target_is_directory=True)
    try:
        if link.is_dir() and not link.is_symlink():
            # A plain folder (a copy, or written by hand) cannot be renamed over: retire it first.
            os.replace(link, version.with_name(f"{version.name}.retired"))
        os.replace(temporary, link)
    finally:
        temporary.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk before the folder holding it is published."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
