"""The folders gradconceal writes into (an evaluation's output folder, a training folder): owned and locked.

gradconceal writes only into folders it owns: a new or empty folder, which it marks as its own with
``.gradconceal-folder``, or a folder made by an earlier gradconceal (the marker, its lock file, or a
``results.json`` of kind ``gradconceal-results``). A folder holding files it did not write is refused, so the
user's own ``report.md`` in ``--out .`` is never replaced. One run per folder: a second run on a folder in use
is refused with a clear error instead of interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Union

import filelock

from gradconceal.errors import GradconcealError

LOCK_FILE = ".gradconceal.lock"
MARKER_FILE = ".gradconceal-folder"


def default_file_mode() -> int:
    """The permissions ``open()`` would give a new file under the process's umask (0644 under umask 022)."""
    mask = os.umask(0o022)  # reading the umask means setting it; it is put back at once
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without error it becomes ``path`` (fsync,
    the usual file mode, one rename), so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files; ours are shared like any file
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def require_replaceable(path: Union[str, Path], is_ours: Callable[[Path], bool], what: str) -> Path:
    """``path`` when writing there replaces nothing of the user's: nothing is there yet, or a regular file that
    ``is_ours`` recognises as one gradconceal wrote (an earlier audit, checkpoint, ...). Anything else (the
    user's own file of that name, a folder, a named pipe) raises ``GradconcealError`` naming the path, so a
    default output name such as ``audit.json`` in the current folder never replaces a file of the user's."""
    path = Path(path)
    for folder in path.parents:
        if os.path.lexists(folder):
            if not folder.is_dir():
                raise GradconcealError(f"cannot write {what} to {path}: {folder} is a file, not a folder")
            break
    if not os.path.lexists(path):
        return path
    if path.is_file() and not path.is_symlink():
        try:
            ours = is_ours(path)
        except (OSError, ValueError):
            ours = False
        if ours:
            return path
        raise GradconcealError(f"refusing to replace {path}: it exists and is not {what} gradconceal wrote; "
                               "move it away or write elsewhere")
    raise GradconcealError(f"refusing to write {what} to {path}: something other than a regular file is there "
                           "(a folder, a link, a pipe); write elsewhere")


def read_json_field(path: Union[str, Path], field: str) -> Any:
    """The value of ``field`` in the JSON object in ``path`` (at most 16 MiB read), None when the file holds
    another JSON value; raises ``OSError`` or ``ValueError`` when it cannot be read or is not JSON."""
    with open(path, "rb") as handle:
        data = json.loads(handle.read(16 << 20))
    return data.get(field) if isinstance(data, dict) else None


def read_json_mapping(path: Union[str, Path], field: str) -> Dict[str, Any]:
    """The mapping under ``field`` of the JSON object in ``path`` (a file gradconceal wrote beside its records),
    empty when the file is missing, not a regular file (a named pipe would block the read), unreadable, or holds
    no such mapping: such files only save work, so a damaged one is recomputed, never an error."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    value = data.get(field) if isinstance(data, dict) else None
    return dict(value) if isinstance(value, dict) else {}


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(data)


_RECORD_KEYS = {"model", "defense", "attack", "index", "job"}


def _first_line(path: Path) -> bytes:
    """The first line of a plain or gzipped regular file (at most 1 MiB), b'' when unreadable."""
    import gzip

    if not path.is_file():
        return b""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            return bytes(handle.readline(1 << 20))
    except (OSError, EOFError):
        return b""


def _made_by_gradconceal(folder: Path) -> bool:
    """Whether ``folder`` carries a sign of gradconceal: the marker, the lock file, a results.json of kind
    gradconceal-results, or a records file whose first line is a gradconceal record."""
    if (folder / MARKER_FILE).is_file() or (folder / LOCK_FILE).is_file():
        return True
    results = folder / "results.json"
    if results.is_file():
        try:
            if read_json_field(results, "kind") == "gradconceal-results":
                return True
        except (OSError, ValueError):
            pass
    for name in ("records.jsonl", "records.jsonl.gz"):
        try:
            first = json.loads(_first_line(folder / name) or b"null")
        except ValueError:
            continue
        if isinstance(first, dict) and _RECORD_KEYS <= set(first):
            return True
    return False


def foreign_files(folder: Union[str, Path]) -> List[str]:
    """The names of the entries in ``folder`` when it exists, is not empty and is not gradconceal's (else [])."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError as error:
        raise GradconcealError(f"cannot read folder {folder}: {error}") from None
    if not names or _made_by_gradconceal(folder):
        return []
    return names


def check_output_folder(folder: Union[str, Path]) -> Path:
    """``folder`` when gradconceal may write into it (missing, empty, or made by gradconceal), changing nothing;
    else one ``GradconcealError``: a file where the folder goes, or a folder holding files gradconceal did not
    write (some of them named). ``claim_folder`` starts with it; commands call it early to refuse before work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GradconcealError(f"output folder {folder} is a file, not a folder; choose another --out")
    foreign = foreign_files(folder)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise GradconcealError(
            f"output folder {folder} holds files gradconceal did not write ({shown}); gradconceal writes only into a "
            "new or empty folder or one it made: choose another --out")
    return folder


def claim_folder(folder: Union[str, Path]) -> Path:
    """Make ``folder`` gradconceal's (create it, or check that it is empty or already gradconceal's) and mark it;
    a folder holding files gradconceal did not write is refused with one line naming some of them."""
    folder = check_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER_FILE
        if not marker.exists():
            marker.write_text("This folder is written by gradconceal (evaluation or training output).\n",
                              encoding="utf-8")
    except OSError as error:
        raise GradconcealError(f"output folder {folder} is not writable: {error}") from None
    return folder


class FolderLock:
    """An exclusive lock on an output folder, so that a second run on it refuses instead of interleaving.

    The lock is an OS file lock (``filelock``) on ``.gradconceal.lock`` in the folder: the operating system
    lets go of it when the holder exits, even when it is killed, so a crashed run never leaves the folder
    locked. The file holds the holder's process id for people who look; the lock itself is not in its content.
    """

    def __init__(self, out_dir: Union[str, Path]) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._lock = filelock.FileLock(str(self.path), timeout=0)
        self._held = False

    def acquire(self) -> "FolderLock":
        """Claim the folder (``claim_folder``: refused when it holds files gradconceal did not write), then take
        the lock or raise a clear error naming the folder."""
        folder = claim_folder(self.path.parent)
        try:
            open(self.path, "a").close()  # create it here, so an unwritable folder reads as such, not as busy
        except OSError as error:
            raise GradconcealError(f"output folder {folder} is not writable: {error}") from None
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise GradconcealError(
                f"output folder {folder} is in use by another gradconceal run; wait for it or choose another --out"
            ) from None
        except OSError as error:
            raise GradconcealError(f"output folder {folder} is not writable: {error}") from None
        self._held = True
        if os.name != "nt":  # Windows forbids writing a file another handle holds locked; the pid is only a hint
            try:
                with open(self.path, "w", encoding="utf-8") as handle:
                    handle.write(f"{os.getpid()}\n")
            except OSError as error:
                self.release()
                raise GradconcealError(f"output folder {folder} is not writable: {error}") from None
        return self

    def release(self) -> None:
        """Release the lock (the file stays; it holds no state). Does nothing when the lock is not held."""
        if self._held:
            self._held = False
            self._lock.release()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
