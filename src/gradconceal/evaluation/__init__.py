"""Evaluation: a spec (models x defences x attacks on a data source) run into per-sample records and a report.

``evaluate(spec)`` is the entry point; the spec is a TOML/JSON file, a dict, or a previous ``results.json``.
Records are the source of truth: metrics, tables and plots are computed from them, runs resume from them,
and processes started by ``torchrun`` split the images between them and merge their records.
"""

from typing import Any

from gradconceal.evaluation.spec import FORMAT_VERSION, EvalSpec, load_spec, sample_seed, sample_seeds

__all__ = ["FORMAT_VERSION", "EvalSpec", "Results", "evaluate", "load_spec", "sample_seed", "sample_seeds"]


def __getattr__(name: str) -> Any:
    """Import the runner only when it is used (it pulls in the model zoo and the attacks)."""
    if name in ("evaluate", "Results"):
        from gradconceal.evaluation import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradconceal.evaluation' has no attribute {name!r}")
