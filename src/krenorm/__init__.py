"""krenorm: kernel renormalization of finite Bayesian one-hidden-layer networks.

Theory in the proportional limit (P, N → ∞, P/N fixed) and its check against sampled finite
networks. The mathematics, with the tests that check each formula, is in docs/math/ (theory.md,
features.md, spectra.md, adaptive.md); the package layout in docs/architecture.md.

Symbols used across the package (documented once here):
    q_bar     Q̄, the order parameter of the effective action (scalar, D×D or Np×Np)
    lambda0   λ0, Gaussian prior precision of first-layer weights
    lambda1   λ1, Gaussian prior precision of readout weights
    width     N, hidden units (FC) or channels (CNN/LCN); a float, math.inf is infinite width
    temperature  T, the label-noise variance of the equivalent Gaussian process
    Np        number of patches (output positions) of a convolution
    M         patch dimension c·m_h·m_w
"""

#: The one place the version is written; pyproject.toml reads it (setuptools dynamic version).
__version__ = "0.1.0"
