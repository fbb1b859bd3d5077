"""Torch modules in the theory parameterisation (THEORY.md §1), posterior samplers and posterior
observables.

    modules            FC / CNN / LCN / CNN-GAP networks with R replicas in one batched pass
    readout_posterior  the Gaussian readout given the hidden layer, in closed form
    samplers           unadjusted Langevin, MALA, collapsed (readout integrated out) samplers
    observables        autocorrelation time / ESS / standard errors, kernel alignment, Q estimate
    posterior          resumable runs with checkpoints and progress, sample_posterior → summary
"""

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
    ChainEstimate,
    KernelAlignment,
    centered_kernel_alignment,
    compare_kernels,
    effective_sample_size,
    estimate_mean,
    integrated_autocorrelation_time,
    kernel_target_alignment,
    readout_order_parameter,
    split_rhat,
)
from krenorm.networks.posterior import (
    PosteriorAccumulator,
    PosteriorRun,
    PosteriorSummary,
    sample_posterior,
)
from krenorm.networks.readout_posterior import GaussianReadout
from krenorm.networks.samplers import (
    SAMPLERS,
    CollapsedSampler,
    LangevinSampler,
    MALASampler,
    PosteriorSampler,
    StepStatistics,
    default_step_size,
)

__all__ = [
    "NETWORK_CLASSES",
    "SAMPLERS",
    "AutocorrelationTime",
    "CNNGAPNetwork",
    "CNNNetwork",
    "ChainEstimate",
    "CollapsedSampler",
    "FCNetwork",
    "GaussianReadout",
    "KernelAlignment",
    "LCNNetwork",
    "LangevinSampler",
    "MALASampler",
    "PosteriorAccumulator",
    "PosteriorRun",
    "PosteriorSampler",
    "PosteriorSummary",
    "PreparedInputs",
    "ReplicatedNetwork",
    "StepStatistics",
    "build_network",
    "centered_kernel_alignment",
    "compare_kernels",
    "default_step_size",
    "effective_sample_size",
    "estimate_mean",
    "integrated_autocorrelation_time",
    "kernel_target_alignment",
    "make_generator",
    "readout_order_parameter",
    "sample_posterior",
    "split_rhat",
]
