"""Benchmarks: GCM overhead, attack speed vs torchattacks and the bare loop, memory, runner throughput, scaling.

``run_suite(["gcm", "attacks"], quick=True)`` returns rows of measured values and ratios with their
targets; ``python benchmarks/run.py`` prints them as a table with the command that reproduces it. This
package lives outside gradconceal (it needs the ``compare`` extra: torchattacks) and runs from a checkout.
Benchmarks are not tests: they run on demand, never in the test suite.
"""

from gcbench.results import Row, ratio_table
from gcbench.suite import BENCHMARKS, SuiteResult, run_suite
from gcbench.timing import interleaved, median, paired_ratio

__all__ = ["BENCHMARKS", "Row", "SuiteResult", "interleaved", "median", "paired_ratio", "ratio_table", "run_suite"]
