"""Effective actions of one-hidden-layer networks in the proportional limit, saddle-point solvers,
posterior predictions and the scikit-learn estimator (THEORY.md §3–6).
"""
