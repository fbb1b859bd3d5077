"""Activation kernels κ and means μ, Conv2d-exact patches, FC Grams and CNN/LCN local Gram blocks
(stored once per unordered pair, chunked under a memory budget), NNGP kernels, and the one
`PatchGeometry` (docs/math/theory.md §1–2)."""

from krenorm.kernels.activations import (
    ACTIVATION_NAMES,
    Activation,
    gauss_hermite_kernel,
    gauss_hermite_mean,
    get_activation,
)
from krenorm.kernels.grams import (
    LocalGramBlocks,
    compute_local_blocks,
    fc_input_gram,
    fc_kernel,
    fc_kernel_diagonal,
    fc_means,
    flatten_inputs,
    local_cross_blocks,
    local_diagonal_blocks,
    local_gram_blocks,
    local_test_diagonals,
    scaled_patches,
)
from krenorm.kernels.nngp import nngp_diagonal, nngp_kernel
from krenorm.kernels.patches import PatchGeometry, extract_patches, patch_grid

__all__ = [
    "ACTIVATION_NAMES",
    "Activation",
    "LocalGramBlocks",
    "PatchGeometry",
    "compute_local_blocks",
    "extract_patches",
    "fc_input_gram",
    "fc_kernel",
    "fc_kernel_diagonal",
    "fc_means",
    "flatten_inputs",
    "gauss_hermite_kernel",
    "gauss_hermite_mean",
    "get_activation",
    "local_cross_blocks",
    "local_diagonal_blocks",
    "local_gram_blocks",
    "local_test_diagonals",
    "nngp_diagonal",
    "nngp_kernel",
    "patch_grid",
    "scaled_patches",
]
