"""Per-sample records on disk: append-only JSON lines that survive a crash (the folder's lock: ``gradconceal.folders``).

Each ``append`` writes whole lines (one JSON object each) with a single ``os.write`` loop, then fsyncs, so
a finished batch is on disk before the next one starts. A kill can at worst leave the last line cut short;
``load`` drops such a torn line with a warning and ``RecordStore`` cuts it off before appending again.

A run writes ``records.jsonl``; under torchrun, rank r > 0 writes ``records.rank<r>.jsonl`` and rank 0
merges those into ``records.jsonl`` at the end. Reading gathers every file, so a run resumes after a crash
in any phase, with any number of processes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

from gradconceal.errors import GradconcealError
from gradconceal.evaluation.records import Key, Record, record_from_dict, record_key
from gradconceal.files import open_regular, special_file_kind
from gradconceal.folders import atomic_path

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
ARCHIVE_FILE = RECORDS_FILE + ".gz"  # a gzip of the records, for folders kept under version control

def part_file(rank: int) -> str:
    """The records file of one process: rank 0 (or a single process) writes the main file."""
    return RECORDS_FILE if rank == 0 else f"records.rank{rank}.jsonl"


def unpack_archive(out_dir: Path) -> int:
    """Unpack ``records.jsonl.gz`` into ``records.jsonl`` when only the archive is there; returns its bytes.

    Lets a folder that ships its records compressed (``gzip -k records.jsonl``) resume or re-report.
    """
    import gzip
    import shutil

    archive, target = Path(out_dir) / ARCHIVE_FILE, Path(out_dir) / RECORDS_FILE
    for path in (archive, target):
        kind = special_file_kind(path)
        if kind is not None:
            raise GradconcealError(f"{path} is {kind}, not a regular file; remove it from the output folder")
    if target.exists() or not archive.exists():
        return 0
    try:
        with atomic_path(target) as tmp, gzip.open(archive, "rb") as source, open(tmp, "wb") as handle:
            shutil.copyfileobj(source, handle)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise GradconcealError(f"cannot unpack {archive}: {error}") from None
    log.info("unpacked %s into %s", archive.name, target.name)
    return target.stat().st_size


def _repair_tail(path: Path) -> int:
    """Cut a torn last line (no final newline) off ``path``; returns the number of bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline; a torn line is at most one record long.
        block = 1 << 16
        end = size
        cut = 0
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            pos = chunk.rfind(b"\n")
            if pos >= 0:
                cut = start + pos + 1
                break
            end = start
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    return size - cut


def read_records(path: Path) -> Iterator[Record]:
    """Yield the intact records of one file; a torn or unreadable line is skipped with a warning. A records file
    that is not a regular file (a named pipe would block the read) is refused."""
    try:
        handle = open_regular(path, "records file", "remove it from the output folder")
    except OSError as error:
        raise GradconcealError(f"cannot read records file {path}: {error}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", path, len(raw))
                continue
            try:
                record = record_from_dict(json.loads(raw))
            except (ValueError, KeyError, TypeError, GradconcealError):
                log.warning("%s: line %d is not a record and was dropped", path, number)
                continue
            yield record


def _lines(records: Iterable[Record]) -> bytes:
    """Records as JSON lines (keys sorted, no NaN), the one on-disk form."""
    return b"".join(json.dumps(r.to_dict(), sort_keys=True, allow_nan=False).encode("utf-8") + b"\n" for r in records)


class RecordStore:
    """The records of one output folder: ``load`` what is done, ``append`` new records durably."""

    def __init__(self, out_dir: Path, *, rank: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.rank = int(rank)
        self.path = self.out_dir / part_file(self.rank)
        self._fd: Optional[int] = None

    def files(self) -> List[Path]:
        """Every records file in the folder (the main file first, then the processes' parts)."""
        parts = sorted(self.out_dir.glob("records.rank*.jsonl"))
        main = self.out_dir / RECORDS_FILE
        return ([main] if main.exists() else []) + parts

    def load(self) -> Dict[Key, Record]:
        """All intact records of the folder by key (first occurrence wins; duplicates are identical)."""
        records: Dict[Key, Record] = {}
        for path in self.files():
            for record in read_records(path):
                records.setdefault(record_key(record), record)
        return records

    def open(self) -> "RecordStore":
        """Open this process's file for appending, after cutting off a torn last line."""
        if self._fd is not None:
            return self
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            removed = _repair_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise GradconcealError(f"cannot open records file {self.path} for writing: {error}") from None
        if removed:
            log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.path, removed)
        return self

    def append(self, records: Iterable[Record]) -> None:
        """Write ``records`` as whole JSON lines and fsync them before returning; a records file removed or
        replaced while the run writes to it is an error (its records would be lost without a word)."""
        data = _lines(records)
        if not data:
            return
        self.open()
        assert self._fd is not None  # open() sets it or raises
        self._check_still_there()
        view = memoryview(data)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as error:
            self._cut_back(start)
            raise GradconcealError(
                f"cannot write records to {self.path}: {error}; finished records are kept, rerun to resume"
            ) from None

    def _check_still_there(self) -> None:
        assert self._fd is not None  # called with the file open
        opened = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
        except OSError:
            current = None
        if opened.st_nlink == 0 or current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            raise GradconcealError(f"{self.path} was removed or replaced while this run was writing to it; its records "
                                   "are lost: rerun the same command to compute them again")

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace the folder's records by ``records`` (atomically; the processes' part files are folded in)."""
        self.close()
        main = self.out_dir / RECORDS_FILE
        try:
            with atomic_path(main) as tmp:
                tmp.write_bytes(_lines(records))
        except OSError as error:
            raise GradconcealError(f"cannot rewrite {main}: {error}") from None
        for part in self.out_dir.glob("records.rank*.jsonl"):
            part.unlink()

    def _cut_back(self, size: int) -> None:
        """After a failed append (disk full, I/O error), drop what it wrote, so no torn line stays behind.

        If even that fails, the torn line is cut when the folder is next opened (``open`` repairs the tail).
        """
        assert self._fd is not None  # called after a failed append, with the file open
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as error:
            log.warning("%s: could not cut back a failed append (%s); the next run repairs it", self.path, error)

    def close(self) -> None:
        """Close the file (records are already on disk)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def merge_parts(self) -> int:
        """Rank 0: append the records of the other processes' files to the main file, then delete them."""
        parts = sorted(self.out_dir.glob("records.rank*.jsonl"))
        if not parts:
            return 0
        known = set()
        main = self.out_dir / RECORDS_FILE
        if main.exists():
            known = {record_key(r) for r in read_records(main)}
        merged = 0
        for part in parts:
            fresh = [r for r in read_records(part) if record_key(r) not in known]
            self.append(fresh)
            known.update(record_key(r) for r in fresh)
            merged += len(fresh)
        for part in parts:  # only after every record is safely in the main file
            part.unlink()
        return merged

    def __enter__(self) -> "RecordStore":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
