"""Kernel rescaling versus adaptation across scaling regimes χ ∈ [1, N] (ADAPTIVE.md)."""
