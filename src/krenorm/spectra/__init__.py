"""Exact hypercube and sphere-product spectra of FC/CNN/LCN kernels, learning index and
eigenlearning curves (docs/math/spectra.md).
"""
