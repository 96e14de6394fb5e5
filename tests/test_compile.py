"""``compile`` in an evaluation: the attacks' model through torch.compile, same decisions, bounded recompiles.

The fast tests compile with torch's ``aot_eager`` backend (the same graph capture, dynamic batch dimension and
autograd as inductor, without generating C++: inductor takes 20-60 s per graph on a small CPU); the slow one
uses inductor itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from attacks_support import RECORD_DECISIONS, evaluate_records
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.run import Runner
from gradconceal.evaluation.spec import load_spec

# 9 images in batches of 4 (the last holds one image), PGD with early stop (batches shrink as images are
# fooled), a BPDA view (its hooks sit on the eager GCM layer in front of the compiled base), a targeted APGD.
SPEC: Dict[str, Any] = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm"],
    "data": {"source": "fashion-mnist", "n": 9},
    "attacks": [
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "16/255", "steps": 6, "alpha": "4/255",
         "check_every": 1},
        {"label": "BPDA-PGD", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": "8/255", "steps": 4},
        {"label": "APGD-T", "attack": "apgd", "norm": "linf", "eps": "8/255", "steps": 4, "loss": "dlr",
         "targeted": True, "n_target_classes": 2},
    ],
    "batch_size": 4,
    "device": "cpu",
    "seed": 2,
    "audit": False,
    "gallery": 0,
}


class CountingBackend:
    """A torch.compile backend that counts the graphs it is asked to compile (each compile or recompile)."""

    def __init__(self, inner: str) -> None:
        self.inner = inner
        self.graphs = 0
        self.batch_sizes: List[Any] = []

    def __call__(self, graph: torch.fx.GraphModule, inputs: List[Any]) -> Any:
        self.graphs += 1
        self.batch_sizes.append(next((i.shape[0] for i in inputs if isinstance(i, torch.Tensor) and i.ndim == 4), None))
        if self.inner == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(graph, inputs)
        return torch._dynamo.lookup_backend(self.inner)(graph, inputs)


def _evaluate(spec: Dict[str, Any], out: Path) -> List[Dict[str, Any]]:
    return evaluate_records(spec, out)


def _compare(spec: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> CountingBackend:
    """Evaluate ``spec`` eager and compiled; assert the same decisions; returns the compiled run's backend."""
    eager = _evaluate(spec, tmp_path / "eager")
    counting = CountingBackend(backend)
    torch._dynamo.reset()  # this test's compiles only: nothing cached by an earlier test
    monkeypatch.setattr(Runner, "compile_backend", counting)
    compiled = _evaluate({**spec, "compile": True}, tmp_path / "compiled")
    assert len(compiled) == len(eager) > 40
    for a, b in zip(eager, compiled):
        assert {k: a.get(k) for k in RECORD_DECISIONS} == {k: b.get(k) for k in RECORD_DECISIONS}, (a, b)
        assert a["job"] == b["job"]  # compile is not part of the job key
    assert any(r.get("stopped_early") or r.get("fooled") for r in compiled)  # early stop shrank batches
    return counting


def test_compiled_attacks_decide_as_eager_with_few_graphs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _compare(SPEC, tmp_path, monkeypatch, "aot_eager")
    # one model: a graph for the attack steps (grad) and one for the no-grad checks, each for batches of
    # 2-15 images and of 1 image (4 cache entries; torch's first compile may call the backend twice); early
    # stop's shrinking batches (4, 3, 2, ...) reuse them; no graph for 0 images
    assert 2 <= counting.graphs <= 6, counting.batch_sizes


def test_bfloat16_autocast_with_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {**SPEC, "dtype": "bfloat16", "attacks": SPEC["attacks"][:2]}
    counting = _compare(spec, tmp_path, monkeypatch, "aot_eager")
    assert 2 <= counting.graphs <= 6, counting.batch_sizes


@pytest.mark.slow
def test_inductor_decides_as_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _compare({**SPEC, "attacks": SPEC["attacks"][:2]}, tmp_path, monkeypatch, "inductor")
    assert 2 <= counting.graphs <= 6, counting.batch_sizes


def test_compile_key_in_the_spec() -> None:
    assert load_spec(SPEC).compile is None
    assert load_spec({**SPEC, "compile": True}).compile == "default"
    spec = load_spec({**SPEC, "compile": "max-autotune"})
    assert spec.compile == "max-autotune" and spec.to_dict()["compile"] == "max-autotune"
    assert load_spec(load_spec(SPEC).to_dict()).compile is None  # false round-trips
    with pytest.raises(GradconcealError, match="compile must be one of"):
        load_spec({**SPEC, "compile": "fastest"})
    with pytest.raises(GradconcealError, match="compile must be true, false or a torch.compile mode"):
        load_spec({**SPEC, "compile": 1})


def test_compile_flag() -> None:
    import argparse

    from gradconceal.cli.evaluate import register, spec_from_flags

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--compile"])
    assert spec_from_flags(args)["compile"] == "default"
    args = parser.parse_args(["evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--compile",
                              "max-autotune"])
    assert spec_from_flags(args)["compile"] == "max-autotune"
    args = parser.parse_args(["evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist"])
    assert "compile" not in spec_from_flags(args)
