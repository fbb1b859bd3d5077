"""Torch modules in the theory parameterisation (docs/math/theory.md §1), posterior samplers and
posterior observables.

    modules            FC / CNN / LCN / CNN-GAP networks with R replicas in one batched pass
    readout_posterior  the Gaussian readout given the hidden layer, in closed form
    posterior_density  target densities: full (W, a) and collapsed (readout integrated out)
    transitions        transition kernels: unadjusted Langevin, MALA, HMC (per-replica steps)
    adaptation         burn-in step-size adaptation per replica, scheduler-style
    samplers           named samplers (density + kernel + acceptance monitor), default steps
    settings           SamplerSettings: how to sample, validated once
    diagnostics        ArviZ errors, ESS and R̂; replica health and exclusion; InferenceData
    observables        Sokal τ, kernel alignment, Q estimate
    checkpoint         verified checkpoint files (SHA-256, weights_only)
    posterior          resumable runs with checkpoints and progress, sample_posterior → summary
"""

from krenorm.networks.adaptation import (
    CautiousAdaptation,
    DualAveraging,
    StepSizeAdaptation,
    adaptation_for,
)
from krenorm.networks.checkpoint import load_checkpoint, save_checkpoint
from krenorm.networks.diagnostics import (
    ChainEstimate,
    PosteriorTraces,
    ReplicaDiagnostics,
    effective_sample_size,
    estimate_mean,
    inference_data,
    rank_rhat,
    replica_health,
    split_rhat,
)
from krenorm.networks.modules import (
    NETWORK_CLASSES,
    CNNGAPNetwork,
    CNNNetwork,
    FCNetwork,
    LCNNetwork,
    PreparedInputs,
    ReplicatedNetwork,
    build_network,
    make_generator,
)
from krenorm.networks.observables import (
    AutocorrelationTime,
    KernelAlignment,
    centered_kernel_alignment,
    compare_kernels,
    integrated_autocorrelation_time,
    kernel_target_alignment,
    readout_order_parameter,
)
from krenorm.networks.posterior import (
    PosteriorAccumulator,
    PosteriorRun,
    PosteriorSummary,
    sample_posterior,
)
from krenorm.networks.posterior_density import (
    POSTERIOR_DENSITIES,
    CollapsedPosterior,
    FullPosterior,
    PosteriorDensity,
)
from krenorm.networks.readout_posterior import GaussianReadout
from krenorm.networks.samplers import (
    SAMPLERS,
    CollapsedHMCSampler,
    CollapsedSampler,
    CollapsedSplitHMCSampler,
    HMCSampler,
    LangevinSampler,
    MALASampler,
    PosteriorSampler,
    SplitHMCSampler,
    default_step_size,
)
from krenorm.networks.settings import SamplerSettings
from krenorm.networks.transitions import (
    TRANSITION_KERNELS,
    HMCKernel,
    KernelState,
    LangevinKernel,
    MALAKernel,
    SplitHMCKernel,
    StepStatistics,
    TransitionKernel,
)

__all__ = [
    "NETWORK_CLASSES",
    "POSTERIOR_DENSITIES",
    "SAMPLERS",
    "TRANSITION_KERNELS",
    "AutocorrelationTime",
    "CNNGAPNetwork",
    "CNNNetwork",
    "CautiousAdaptation",
    "ChainEstimate",
    "CollapsedHMCSampler",
    "CollapsedPosterior",
    "CollapsedSampler",
    "CollapsedSplitHMCSampler",
    "DualAveraging",
    "FCNetwork",
    "FullPosterior",
    "GaussianReadout",
    "HMCKernel",
    "HMCSampler",
    "KernelAlignment",
    "KernelState",
    "LCNNetwork",
    "LangevinKernel",
    "LangevinSampler",
    "MALAKernel",
    "MALASampler",
    "PosteriorAccumulator",
    "PosteriorDensity",
    "PosteriorRun",
    "PosteriorSampler",
    "PosteriorSummary",
    "PosteriorTraces",
    "PreparedInputs",
    "ReplicaDiagnostics",
    "ReplicatedNetwork",
    "SamplerSettings",
    "SplitHMCKernel",
    "SplitHMCSampler",
    "StepSizeAdaptation",
    "StepStatistics",
    "TransitionKernel",
    "adaptation_for",
    "build_network",
    "centered_kernel_alignment",
    "compare_kernels",
    "default_step_size",
    "effective_sample_size",
    "estimate_mean",
    "inference_data",
    "integrated_autocorrelation_time",
    "kernel_target_alignment",
    "load_checkpoint",
    "make_generator",
    "rank_rhat",
    "readout_order_parameter",
    "replica_health",
    "sample_posterior",
    "save_checkpoint",
    "split_rhat",
]
