"""krenorm: kernel renormalization of finite Bayesian one-hidden-layer networks.

Theory in the proportional limit (P, N → ∞, P/N fixed) and its check against sampled finite
networks. See the design documents (THEORY.md, FEATURES.md, SPECTRA.md, ADAPTIVE.md).

Symbols used across the package (documented once here):
    q_bar     Q̄, the order parameter of the effective action (scalar, D×D or Np×Np)
    lambda0   λ0, Gaussian prior precision of first-layer weights
    lambda1   λ1, Gaussian prior precision of readout weights
    width     N, hidden units (FC) or channels (CNN/LCN)
    temperature  T, the label-noise variance of the equivalent Gaussian process
    Np        number of patches (output positions) of a convolution
    M         patch dimension c·m_h·m_w
"""

__version__ = "0.1.0"
