"""How many CPU threads torch uses in a command: one flag (``--threads``), one meaning, one default.

``train``, ``evaluate``, ``audit`` and ``demo`` share it. A setting is a count (``1``, ``4``) or ``'auto'``:

* a count ``N >= 1``: torch's intra-op threads (``torch.set_num_threads(N)``, which also sets MKL's);
* ``'auto'``: the cores this process may run on that other processes leave free, shared among the local
  processes of a ``torchrun`` job (:func:`auto_threads`), at least 1;
* not given: ``OMP_NUM_THREADS`` when the environment sets it (the user's choice, left as found), else
  :data:`DEFAULT_THREADS`.

The default is one thread (see "Sharing a busy machine" in docs/performance.md): torch's own default, one thread
per core, spins its OpenMP threads against other processes (a 4.6x slower demo beside two busy loops on two
cores), and a count that follows the machine's load would make a rerun's numbers depend on that load, since
the thread count changes the last bits of a convolution's sums.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Optional, Union

from gradconceal.errors import GradconcealError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "DEFAULT_THREADS",
    "THREADS_HELP",
    "ThreadSetting",
    "add_threads_flag",
    "apply_threads",
    "auto_threads",
    "available_cores",
    "busy_cores",
    "parse_threads",
    "resolve_threads",
]

AUTO = "auto"
DEFAULT_THREADS = 1
ThreadSetting = Union[int, str]

# Where Linux says how many threads are runnable now and how much CPU time a cgroup may use.
LOADAVG_FILE = "/proc/loadavg"
CPU_MAX_FILE = "/sys/fs/cgroup/cpu.max"

THREADS_HELP = (
    "CPU threads for torch: a count >= 1, or 'auto' (the cores other processes leave free). "
    "Default: OMP_NUM_THREADS when set, else 1, the fastest on cores other jobs share; "
    "the same count gives the same numbers bit for bit"
)


def _refused(value: object) -> str:
    return f"--threads must be an integer >= 1 or {AUTO!r}, got {value!r}"


def _check(value: object) -> ThreadSetting:
    """``value`` as a valid setting (an int >= 1 or 'auto'); GradconcealError otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit() and int(text) >= 1:
            return int(text)
        raise GradconcealError(_refused(value))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradconcealError(_refused(value))
    return value


def parse_threads(text: str) -> ThreadSetting:
    """argparse type of ``--threads``: ``'auto'`` or an integer >= 1 (a usage error otherwise)."""
    try:
        return _check(text)
    except GradconcealError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--threads ")) from None


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` with the one text and meaning every command shares."""
    parser.add_argument("--threads", type=parse_threads, default=None, metavar="N|auto", help=THREADS_HELP)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open(CPU_MAX_FILE, encoding="ascii") as file:
            quota, period = file.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_cores() -> float:
    """How many cores other processes keep busy now: the larger of the 1-minute load average and the number of
    runnable threads at this instant besides this one (the average lags a load that has just started)."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Unix
        return 0.0
    try:
        with open(LOADAVG_FILE, encoding="ascii") as file:
            runnable = int(file.read().split()[3].split("/")[0])
        busy = max(busy, float(runnable - 1))
    except (OSError, ValueError, IndexError):
        pass
    return max(0.0, busy)


def auto_threads(cores: int, busy: float, processes: int = 1) -> int:
    """The 'auto' policy: the free cores (``cores - busy``, rounded) shared among ``processes``, at least 1.

    E.g. 2 cores idle -> 2; 2 cores beside one busy process -> 1; 16 cores, load 3 -> 13; 16 idle cores shared by
    4 processes -> 4; any number of cores under a load at or above it -> 1.
    """
    free = (cores - max(0.0, busy)) / max(1, processes)
    return max(1, min(cores, int(math.floor(free + 0.5))))


def _environment_threads() -> Optional[int]:
    """OMP_NUM_THREADS when it holds a count >= 1 (torch already uses it), else None."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


def resolve_threads(setting: Optional[ThreadSetting] = None) -> int:
    """The thread count a setting means now (None: OMP_NUM_THREADS when set, else DEFAULT_THREADS)."""
    if setting is None:
        return _environment_threads() or DEFAULT_THREADS
    checked = _check(setting)
    if isinstance(checked, int):
        return checked
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()  # processes of a torchrun job on this machine
    return auto_threads(available_cores(), busy_cores(), int(local) if local.isdigit() else 1)


def apply_threads(setting: Optional[ThreadSetting] = None) -> int:
    """Set torch's intra-op thread count from a ``--threads`` setting and return the count now in use."""
    import torch

    count = resolve_threads(setting)
    torch.set_num_threads(count)
    log.debug("torch threads: %d (--threads %s)", count, "not given" if setting is None else setting)
    return count
