"""Files read from the user's folders: only regular files are opened, and a file that is not what its name says
is named by what it is.

A named pipe, a socket or a device where a file is expected (an image in a data folder, a labels file, a spec, a
checkpoint) would block a run forever or read without end. ``open_regular`` refuses one before reading from it,
and checks the file it actually opened, so nothing can be swapped in between a check and the read.
``describe_content`` names what the first bytes of a file say it is (an HTML page saved by a failed download, a
Git LFS pointer, JSON text, a zip archive, ...) for the errors about files that hold something else.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

from gradconceal.errors import GradconcealError

__all__ = ["HEAD_BYTES", "PICKLE", "describe_content", "open_regular", "read_head", "special_file_kind"]

PathLike = Union[str, Path]
HEAD_BYTES = 4096  # what describe_content looks at
PICKLE = "it is a Python pickle (the legacy torch.save format)"

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def kind_of_mode(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: 'a regular file', 'a named pipe', 'a folder', ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def special_file_kind(path: PathLike) -> Optional[str]:
    """What ``path`` is when it is there but is not a regular file (or a link to one), else None.

    'a named pipe', 'a socket', 'a character device', 'a block device', 'a folder', or 'a broken symbolic link
    (to TARGET)'; None for a regular file and for a path where nothing is.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)})"
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link that leads back to itself (a loop)"
        return None  # not reachable (permissions, a file where a folder should be): the caller's open says why
    return None if stat.S_ISREG(mode) else kind_of_mode(mode)


def require_file(path: PathLike, what: str, hint: str) -> Path:
    """``path`` when it is a regular file (or a link to one); else one ``GradconcealError``: '{what} PATH is a named
    pipe, not a regular file; {hint}' for anything there that is not a regular file, '{what} not found: PATH'."""
    path = Path(path)
    if path.is_file():
        return path
    kind = special_file_kind(path)
    if kind is not None:
        raise GradconcealError(f"{what} {path} is {kind}, not a regular file; {hint}")
    raise GradconcealError(f"{what} not found: {path}")


def open_regular(path: PathLike, what: str, hint: str) -> BinaryIO:
    """Open ``path`` for reading in binary mode if it is a regular file; raise naming ``what`` and ``hint`` if not.

    The file is opened without blocking and then checked (``fstat``), so a named pipe never blocks the open, and
    a file swapped for one between a check and the open is refused too. Missing files and unreadable ones raise
    the usual ``OSError`` for the caller to name.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise GradconcealError(f"{what} {path} is {kind_of_mode(mode)}, not a regular file; {hint}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_head(path: PathLike, what: str, hint: str, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the regular file ``path`` (``open_regular``'s checks)."""
    with open_regular(path, what, hint) as handle:
        return handle.read(size)


def describe_content(head: bytes, advice: str = "") -> Optional[str]:
    """What the first bytes of a file say it is, as a phrase for an error ('it starts like an HTML page ...').

    ``advice`` (what to do, e.g. 'give the weights file itself') is added after a colon where the phrase does not
    say what to do itself. None when nothing stands out (a binary format not known here). Used for files that
    should hold something else: a checkpoint that is an HTML page saved by a failed download, a spec that is a
    zip archive, ...
    """
    phrase, advised = _describe(head)
    if phrase is None:
        return None
    return f"{phrase}: {advice}" if advice and not advised else phrase


def _describe(head: bytes) -> Tuple[Optional[str], bool]:
    """(phrase, whether it says what to do) for ``describe_content``."""
    if not head:
        return "it is empty (0 bytes)", False
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file it points to: run 'git lfs pull'", True
    text = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
    start = text.lstrip()[:512].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
            start.startswith(b"<") and b"<html" in start):
        return "it starts like an HTML page (a failed download?): download it again", True
    if start.startswith(b"<?xml"):
        return "it holds XML text (a failed download's error page?): download it again", True
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: decompress it first (gunzip)", True
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "it is a zip archive", False
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (Keras or h5py weights)", False
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE, False
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "it is UTF-32 text", False
    if head.startswith(_UTF16_BOMS) or _looks_like_utf16(head):
        return "it is UTF-16 text", False
    if b"\x00" in head:
        return None, False
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(text) - 3:  # not merely a character cut at the end of the head
            return None, False
        decoded = text[: error.start].decode("utf-8")
    stripped = decoded.lstrip()
    if stripped.startswith(("{", "[")):
        return "it holds JSON text", False
    first = stripped.splitlines()[0] if stripped else ""
    return (f"it holds text ({first[:40]!r})" if first else "it holds only white space"), False


def _looks_like_utf16(head: bytes) -> bool:
    """UTF-16 text without a byte-order mark: ASCII characters with a zero byte beside each."""
    sample = head[:256]
    if len(sample) < 8:
        return False
    odd_zero = sum(1 for byte in sample[1::2] if byte == 0) / len(sample[1::2])
    even_zero = sum(1 for byte in sample[0::2] if byte == 0) / len(sample[0::2])
    return max(odd_zero, even_zero) > 0.6 and min(odd_zero, even_zero) < 0.1
