"""Torch modules in the theory parameterisation (THEORY.md §1), posterior samplers and posterior
observables.
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

__all__ = [
    "NETWORK_CLASSES",
    "CNNGAPNetwork",
    "CNNNetwork",
    "FCNetwork",
    "LCNNetwork",
    "PreparedInputs",
    "ReplicatedNetwork",
    "build_network",
    "make_generator",
]
