"""Benchmarks: GCM overhead, attack speed vs torchattacks and the bare loop, memory, runner throughput, scaling.

``run_suite(["gcm", "attacks"], quick=True)`` returns rows of measured values and ratios with their
targets; ``gradconceal bench`` prints them as a table with the command that reproduces it. Benchmarks are
not tests: they run on demand, never in the test suite.
"""

from gradconceal.bench.results import Row, ratio_table
from gradconceal.bench.suite import BENCHMARKS, SuiteResult, run_suite
from gradconceal.bench.timing import interleaved, median, paired_ratio

__all__ = ["BENCHMARKS", "Row", "SuiteResult", "interleaved", "median", "paired_ratio", "ratio_table", "run_suite"]
