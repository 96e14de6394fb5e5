"""The lock of a folder gradconceal writes into (an evaluation's output folder, a training folder).

One run per folder: a second run on a folder in use is refused with a clear error instead of interleaving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import filelock

from gradconceal.errors import GradconcealError

LOCK_FILE = ".gradconceal.lock"


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
        """Take the lock or raise a clear error naming the folder."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise GradconcealError(f"output folder {folder} is a file, not a folder; choose another --out")
        try:
            folder.mkdir(parents=True, exist_ok=True)
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
