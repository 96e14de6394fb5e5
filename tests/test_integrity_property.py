"""Property: whatever happens to one output folder (runs, kills, spec edits, new weights, changed images,
--recompute), every number a run reports equals a fresh run's on the same inputs, or the run is refused with a
clear error. Random sequences drawn by hypothesis; kills are subprocesses killed after a random record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gradconceal.errors import GradconcealError  # noqa: E402

VARIANTS = {  # spec edits between runs into the same folder
    "fgsm": [{"label": "A", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
    "pgd": [{"label": "A", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 2, "alpha": "4/255"}],
    "both": [{"label": "A", "attack": "fgsm", "norm": "linf", "eps": "8/255"},
             {"label": "B", "attack": "pgd", "norm": "linf", "eps": "4/255", "steps": 2, "alpha": "2/255"}],
}
REFUSALS = ("they are never reused", "in use by another gradconceal run")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

actions = st.lists(st.one_of(
    st.tuples(st.just("run"), st.sampled_from(sorted(VARIANTS)), st.sampled_from([4, 6]), st.booleans()),
    st.tuples(st.just("kill"), st.sampled_from(sorted(VARIANTS)), st.sampled_from([4, 6]), st.integers(1, 12)),
    st.tuples(st.just("weights"), st.integers(0, 3), st.just(0), st.just(0)),
    st.tuples(st.just("image"), st.integers(0, 5), st.just(0), st.just(0)),
), min_size=1, max_size=4)
runs = st.tuples(st.sampled_from(sorted(VARIANTS)), st.sampled_from([4, 6]))


class World:
    """The inputs of the folder under test (a checkpoint, a data folder) and fresh-run results to compare with."""

    def __init__(self, root: Path) -> None:
        from gradconceal.data import load_dataset

        try:
            data = load_dataset("fashion-mnist", limit=6)
        except GradconcealError as error:
            pytest.skip(f"Fashion-MNIST not available: {error}")
        self.root = root
        self.images = np.stack([(data[i][0][0].numpy() * 255).round().astype(np.uint8) for i in range(6)])
        self.labels = np.array(data.targets[:6])
        self.version = 0  # 0: the shipped weights; v > 0: with noise drawn from seed v (other predictions)
        self.fresh: Dict[Tuple[Any, ...], Any] = {}
        self.count = 0
        self.write_inputs()

    def write_inputs(self) -> None:
        from gradconceal.models.checkpoint import save_checkpoint
        from gradconceal.models.zoo import load_model
        import torch

        folder = self.root / "data"
        folder.mkdir(parents=True, exist_ok=True)
        for path, array, magic in ((folder / "t10k-images-idx3-ubyte", self.images, 2051),
                                   (folder / "t10k-labels-idx1-ubyte", self.labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            path.write_bytes(header + array.astype(np.uint8).tobytes())
        model = load_model("fmnist-cnn")
        generator = torch.Generator().manual_seed(self.version)
        with torch.no_grad():
            for parameter in model.net.parameters():
                if self.version:
                    parameter.add_(0.5 * parameter.std() * torch.randn(parameter.shape, generator=generator))
        save_checkpoint(model, self.root / "model.safetensors", architecture="small:cnn")

    def spec(self, variant: str, n: int) -> Dict[str, Any]:
        return {"models": [{"name": str(self.root / "model.safetensors"), "label": "m"}], "defenses": ["none"],
                "data": {"source": f"fashion-mnist:{self.root / 'data'}", "n": n}, "attacks": VARIANTS[variant],
                "batch_size": 2, "device": "cpu", "seed": 0, "audit": False, "gallery": 0}

    def state(self) -> Tuple[Any, ...]:
        return (self.version, self.images.tobytes())

    def fresh_numbers(self, variant: str, n: int) -> Any:
        from gradconceal.evaluation.api import evaluate

        key = (variant, n, self.state())
        if key not in self.fresh:
            self.count += 1
            results = evaluate(self.spec(variant, n), self.root / f"fresh{self.count}", quiet=True, plots=False)
            self.fresh[key] = numbers(results)
        return self.fresh[key]


def numbers(results: Any) -> Any:
    """Every number of the table: clean accuracy, and per attack AR, robust accuracy and mean perturbation size."""
    return [(r.model, r.defense, r.clean.k, r.clean.n,
             sorted((k, m.ar.k, m.ar.n, m.robust.k, m.mean_norm) for k, m in r.attacks.items() if m))
            for r in results.rows]


def killed_run(world: World, out: Path, variant: str, n: int, after: int) -> None:
    """Run in a subprocess and SIGKILL it once ``records.jsonl`` has ``after`` lines (or when it ends)."""
    spec = world.root / "spec.json"
    spec.write_text(json.dumps(world.spec(variant, n)))
    process = subprocess.Popen([sys.executable, "-m", "gradconceal", "--quiet", "evaluate", str(spec), "--out", str(out)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if records.exists() and records.read_bytes().count(b"\n") >= after:
            break
        time.sleep(0.01)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(first=runs, steps=actions, last=runs)
def test_every_number_equals_a_fresh_run_or_the_run_is_refused(tmp_path_factory, first: Tuple[str, int],
                                                               steps: List[Tuple[Any, ...]],
                                                               last: Tuple[str, int]) -> None:
    from gradconceal.evaluation.api import evaluate

    world = World(tmp_path_factory.mktemp("world"))
    out = world.root / "out"
    # a first run fills the folder; random runs, kills and changes follow; a last run must report fresh numbers
    # or be refused, and then --recompute must report them
    for kind, a, b, c in [("run", *first, False), *steps, ("run", *last, False), ("run", *last, True)]:
        if kind == "weights":
            world.version = int(a)
            world.write_inputs()
        elif kind == "image":
            world.images[a] = 255 - world.images[a]  # the image inverted: another image for the model
            world.write_inputs()
        elif kind == "kill":
            killed_run(world, out, a, b, c)
        else:
            try:
                results = evaluate(world.spec(a, b), out, quiet=True, plots=False, recompute=c)
            except GradconcealError as error:
                assert not c and any(text in str(error) for text in REFUSALS), str(error)
                continue
            assert numbers(results) == world.fresh_numbers(a, b)
