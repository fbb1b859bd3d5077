"""Patch-AGOP, CNFA, RFM, ConvRFM and Deep ConvRFM (docs/math/features.md).

Notation as in docs/math/features.md: d = c·q_h·q_w is the patch dimension and M the learned d×d
patch metric (the package docstring's "M = patch dimension" is docs/math/theory.md's symbol, not
used here).
"""

from krenorm.features.agop import PatchAGOP, brute_force_patch_agop, patch_agop
from krenorm.features.cnfa import (
    Agreement,
    CNFAReport,
    LayerCNFA,
    cnfa_report,
    cosine_agreement,
    pearson_agreement,
)
from krenorm.features.conv_kernels import MahalanobisPatchKernel
from krenorm.features.convrfm import ConvRFMClassifier, ConvRFMRegressor
from krenorm.features.deep_convrfm import DeepConvRFMClassifier, LevelRecord, sample_filters
from krenorm.features.metric import psd_matrix_power, update_metric
from krenorm.features.recursion import RecursionResult, RoundRecord, run_feature_recursion
from krenorm.features.rfm import RFMClassifier, RFMRegressor
from krenorm.features.ridge import solve_kernel_ridge
from krenorm.features.synthetic import (
    LabelledImages,
    bars_task,
    local_signal_task,
    noisy_frame_mnist,
    noisy_frame_task,
    star_glyph,
    star_task,
)
from krenorm.kernels.patches import PatchGeometry

__all__ = [
    "Agreement",
    "CNFAReport",
    "ConvRFMClassifier",
    "ConvRFMRegressor",
    "DeepConvRFMClassifier",
    "LabelledImages",
    "LayerCNFA",
    "LevelRecord",
    "MahalanobisPatchKernel",
    "PatchAGOP",
    "PatchGeometry",
    "RFMClassifier",
    "RFMRegressor",
    "RecursionResult",
    "RoundRecord",
    "bars_task",
    "brute_force_patch_agop",
    "cnfa_report",
    "cosine_agreement",
    "local_signal_task",
    "noisy_frame_mnist",
    "noisy_frame_task",
    "patch_agop",
    "pearson_agreement",
    "psd_matrix_power",
    "run_feature_recursion",
    "sample_filters",
    "solve_kernel_ridge",
    "star_glyph",
    "star_task",
    "update_metric",
]
