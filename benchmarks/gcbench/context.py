"""What every measurement shares: the mode (quick or full), repeats, device, output folder and cached inputs.

Models and images load once per suite run; every measurement sees the same model objects, frozen
(no parameter gradients) and in eval mode, as the evaluation runner uses them.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from gcbench.timing import default_clock, interleaved
from gradconceal.errors import GradconcealError

log = logging.getLogger(__name__)


BENCHMARKS_DIR = Path(__file__).resolve().parent.parent  # holds run.py and this package


def child_env(**extra: str) -> Dict[str, str]:
    """This process's environment plus ``extra``, with ``BENCHMARKS_DIR`` on PYTHONPATH (``-m gcbench.*`` children)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


class BenchError(RuntimeError):
    """A measurement could not be taken (a child process failed); the suite reports it and goes on."""


@dataclass
class BenchContext:
    """Settings of one suite run plus a cache of models and image batches."""

    quick: bool = False
    repeats: int = 5
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    out_dir: Optional[Path] = None
    threads: int = 1
    _models: Dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _batches: Dict[Tuple[str, int], Tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise GradconcealError(f"repeats must be >= 1, got {self.repeats}")

    @property
    def clock(self) -> str:
        """The clock of in-process comparisons: CPU time on one CPU thread, else wall time."""
        return default_clock(self.device, self.threads)

    def time(self, contenders: Mapping[str, Callable[[], object]], repeats: Optional[int] = None,
             warmup: int = 1) -> Dict[str, List[float]]:
        """Seconds per call of each contender, timed in turns on this run's clock and device."""
        return interleaved(contenders, repeats or self.repeats, warmup=warmup, device=self.device, clock=self.clock)

    def model(self, name: str) -> nn.Module:
        """The zoo model ``name`` on the bench device, eval mode, parameters frozen (loaded once)."""
        if name not in self._models:
            from gradconceal.models.zoo import load_model

            model = load_model(name).eval().to(self.device)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            self._models[name] = model
        return self._models[name]

    def batch(self, source: str, count: int) -> Tuple[Tensor, Tensor]:
        """The first ``count`` images and labels of data source ``source`` (repeated if it has fewer)."""
        key = (source, count)
        if key not in self._batches:
            from gradconceal.data import load_dataset

            dataset = load_dataset(source, limit=count)
            if len(dataset) == 0:
                raise GradconcealError(f"data source {source!r} has no images")
            indices = [i % len(dataset) for i in range(count)]
            images = torch.stack([dataset[i][0] for i in indices]).to(self.device)
            labels = torch.tensor([int(dataset[i][1]) for i in indices], device=self.device)
            self._batches[key] = (images, labels)
        return self._batches[key]

    def predicted_batch(self, model_name: str, source: str, count: int) -> Tuple[Tensor, Tensor]:
        """Images of ``source`` with the model's own clean top-1 as labels: every sample starts correct.

        Our attacks skip samples the model already gets wrong, torchattacks and the bare loop do not; with
        these labels every side attacks every sample, so timings compare like for like.
        """
        images, _ = self.batch(source, count)
        with torch.no_grad():
            labels = self.model(model_name)(images).argmax(1)
        return images, labels

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def subdir(self, name: str) -> Path:
        """A folder under the output folder (or a temporary one) for a measurement's files."""
        if self.out_dir is None:
            import tempfile

            self.out_dir = Path(tempfile.mkdtemp(prefix="gradconceal-bench-"))
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def machine_description(device: torch.device, threads: int, clock: str = "wall") -> Dict[str, Any]:
    """What the numbers were measured on: CPU, cores, GPU, library versions, threads, date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "arch": platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "torch_threads": threads,
        "clock": clock,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average": _load_average(),
    }
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:
        info["torchattacks"] = None
    import gradconceal

    info["gradconceal"] = gradconceal.__version__
    info["git_commit"] = _git_commit()
    return info


def describe(info: Dict[str, Any]) -> str:
    """One line naming the machine, e.g. '2-core x86_64 CPU (Intel Xeon ...), no GPU, 1 torch thread'."""
    gpu = f"GPU {info['gpu']}" if info.get("gpu") else "no GPU"
    threads = info.get("torch_threads")
    load = info.get("load_average")
    load_text = f", load average {load[0]:.1f} at start" if load else ""
    clock = "process CPU time" if info.get("clock") == "cpu" else "wall time"
    return (f"{info.get('cpu_count')}-core {info.get('arch')} CPU ({info.get('cpu')}), {gpu}, "
            f"{threads} torch thread{'s' if threads != 1 else ''}{load_text}; in-process comparisons timed in "
            f"{clock}; torch {info.get('torch')}, Python {info.get('python')}")


def _load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _git_commit() -> Optional[str]:
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
