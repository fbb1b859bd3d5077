"""How many CPU threads torch uses (docs/scale.md §2).

On a shared or busy machine torch's default (one thread per core) spins threads that wait for
each other: the P = 100 CNN solve took 3.7 s with two threads on a loaded two-core machine and
0.35 s with one. krenorm therefore picks the count deliberately, first match wins:

1. an explicit count (a `threads=` argument or the CLI's --threads),
2. $KRENORM_THREADS (krenorm's own setting, so that a job script can pin krenorm alone),
3. $OMP_NUM_THREADS (the OpenMP convention, honoured as torch itself does at start-up),
4. otherwise torch's default is left alone.

Sweeps run one thread per worker (`experiments.executors`), whatever this says.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The environment variable of krenorm's thread count.
THREADS_VARIABLE = "KRENORM_THREADS"


def _parse(name: str, value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"${name} must be a positive integer, got {value!r}.") from None
    if count < 1:
        raise ValueError(f"${name} must be a positive integer, got {value!r}.")
    return count


def configured_threads(threads: int | None = None) -> int | None:
    """The thread count the rules above choose (None: leave torch's default)."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}.")
        return threads
    for name in (THREADS_VARIABLE, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            return _parse(name, value)
    return None


def apply_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count by the rules above; returns the count in force."""
    count = configured_threads(threads)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()


@contextmanager
def thread_limit(threads: int | None = None) -> Iterator[int]:
    """Run a block with the chosen thread count and restore the previous one afterwards."""
    previous = torch.get_num_threads()
    try:
        yield apply_threads(threads)
    finally:
        torch.set_num_threads(previous)
