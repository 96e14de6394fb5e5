"""Test-suite settings: one intra-op thread, so that timings hold when tests or processes run side by side."""

import os

import torch

# Several tests start subprocesses (resume after kill, torchrun); with the default thread count they
# oversubscribe a small machine, and PyTorch's spinning threads then slow every process down many times.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
