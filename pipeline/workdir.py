"""What a ``command`` stage runner's process left in its folder: the files that are new
or changed since it started, within limits, and never one outside the run's folder.

Pure: no Django, no database. The runner (pipeline/runner_kinds.py) registers what
``harvest`` found as the stage's artifacts; the tests call it on real folders.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path

#: (size, mtime_ns, inode) of a file, or of a link itself: a file rewritten in place
#: changes its mtime, one replaced by a rename changes its inode.
Stamp = tuple[int, int, int]
#: Artifact.path holds this many characters.
MAX_PATH_CHARS = 300


@dataclass(frozen=True)
class Found:
    relpath: str  # relative to the folder that was scanned
    name: str
    size: int
    content_type: str


@dataclass
class Harvest:
    files: list[Found] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "<relpath>: why"
    skipped: int = 0  # new or changed files past the limits
    skipped_bytes: int = 0


#: Entries looked at, at most, when a folder is scanned: a command that wrote a million
#: files must not spend the time its stage has left to stop and record why.
SCAN_LIMIT = 20000


def snapshot(folder: Path, ignore: frozenset[str] = frozenset(), limit: int | None = None) -> dict[str, Stamp]:
    """Every file under ``folder`` and every link (to a file or a folder), without
    following links: a link is judged by where it leads when harvested. At most
    ``limit`` entries: a caller that gets that many knows the scan was cut short."""
    limit = SCAN_LIMIT if limit is None else limit
    stamps: dict[str, Stamp] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if len(stamps) >= limit:
            break
        here = Path(dirpath)
        linked_dirs = [name for name in dirnames if (here / name).is_symlink()]
        for name in [*filenames, *linked_dirs]:
            if len(stamps) >= limit:
                break
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if rel in ignore:
                continue
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue  # removed while we looked
            stamps[rel] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return stamps


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def harvest(
    folder: Path,
    run_root: Path,
    before: dict[str, Stamp],
    *,
    ignore: frozenset[str] = frozenset(),
    max_files: int,
    max_bytes: int,
    prefix: str = "",
) -> Harvest:
    """The files under ``folder`` that are new or changed since ``before``, in path
    order, up to ``max_files`` files and ``max_bytes`` in all; the rest are counted as
    skipped. A link is refused unless it leads to a regular file inside ``run_root``;
    ``prefix`` is what the artifact's path will start with (its length counts).

    ``run_root`` is the run's folder as resolved before the command ran: a command that
    replaced its folder (or the run's) with a link has every file refused."""
    root = run_root
    found = Harvest()
    if root.resolve() != root or not folder.resolve().is_relative_to(root):
        found.refused.append("(all): the stage's folder no longer lies inside the run's folder")
        return found
    total = 0
    after = snapshot(folder, ignore)
    if len(after) >= SCAN_LIMIT:
        found.refused.append(f"(the rest): looked at the first {SCAN_LIMIT} entries of the folder only")
    for rel, stamp in sorted(after.items()):
        if before.get(rel) == stamp:
            continue
        path = folder / rel
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                found.refused.append(f"{rel}: a link leading outside the run's folder")
                continue
            if not target.is_file():
                continue  # a link to a folder inside the run: its files are found where they are
            size = target.stat().st_size
        elif path.is_file():
            size = stamp[0]
        else:
            continue  # a fifo or a socket: not an output
        if len(prefix + rel) > MAX_PATH_CHARS:
            found.refused.append(f"{rel}: the path is longer than {MAX_PATH_CHARS} characters")
            continue
        if len(found.files) >= max_files or total + size > max_bytes:
            found.skipped += 1
            found.skipped_bytes += size
            continue
        total += size
        found.files.append(Found(rel, path.name, size, content_type(path.name)))
    return found
