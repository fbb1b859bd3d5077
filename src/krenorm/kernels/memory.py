"""Re-export of the memory guard, which lives in the bottom layer (krenorm.memory) so that
networks and features use the same estimate-then-refuse path as the kernels."""

from krenorm.memory import (
    DEFAULT_CHUNK_BYTES,
    check_allocation,
    chunk_length,
    default_memory_limit,
    physical_memory_bytes,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "check_allocation",
    "chunk_length",
    "default_memory_limit",
    "physical_memory_bytes",
]
