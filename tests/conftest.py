"""Shared test settings: one torch intra-op thread.

The tests are many small dense operations; with two OpenMP threads on a 2-core machine that runs
anything else, the threads spin-wait on each other (measured 5–50× slower under load), while a
quiet machine gains little from the second thread on these sizes.
"""

import torch

torch.set_num_threads(1)
