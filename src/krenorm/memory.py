"""Memory estimates taken before large allocations, and the chunk sizes derived from a budget.

The one estimate-then-refuse path of the package (bottom layer: imports nothing of krenorm):
kernels, theory, networks, features and spectra call `check_allocation` before any allocation
that grows with the data or the width, so `memory_limit=` and $KRENORM_MEMORY_LIMIT apply
everywhere and a too-large request ends in a MemoryError with advice, not in the allocator."""

from __future__ import annotations

import os

import torch

#: Default budget for temporaries of one chunk of kernel evaluation. Small enough for a chunk to
#: stay in a share of the last-level cache while κ is applied and contracted: CNN test
#: predictions ran 2.2× faster than with 256 MiB chunks (benchmarks/RESULTS.md, "theory").
DEFAULT_CHUNK_BYTES = 32 * 2**20


def physical_memory_bytes() -> int:
    """Physical memory of this machine (POSIX), used for the default allocation limit."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def default_memory_limit() -> int:
    """Largest single result allowed without an explicit limit: $KRENORM_MEMORY_LIMIT bytes, else
    60 % of physical memory (leaves room for the temporaries of the solvers)."""
    env = os.environ.get("KRENORM_MEMORY_LIMIT")
    if env:
        return int(float(env))
    return int(0.6 * physical_memory_bytes())


def check_allocation(what: str, n_elements: int, dtype: torch.dtype, limit: int | None, *,
                     advice: str | None = None) -> int:
    """Estimate the bytes of an allocation and refuse it, with advice, when over the limit.

    `advice` replaces the default advice (fewer points, fewer patches, float32) where another
    knob sets the size, e.g. a network's width."""
    n_bytes = int(n_elements) * torch.empty((), dtype=dtype).element_size()
    limit = default_memory_limit() if limit is None else int(limit)
    if n_bytes > limit:
        advice = advice or ("use fewer training points, a larger stride/mask (fewer patches), "
                            "float32")
        raise MemoryError(
            f"{what} needs {n_bytes / 2**30:.2f} GiB, over the limit of {limit / 2**30:.2f} GiB; "
            f"{advice}, or raise memory_limit / $KRENORM_MEMORY_LIMIT."
        )
    return n_bytes


def chunk_length(bytes_per_item: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of items whose temporaries fit the chunk budget (at least one)."""
    return max(1, int(chunk_bytes) // max(1, int(bytes_per_item)))
