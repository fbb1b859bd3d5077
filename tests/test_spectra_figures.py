"""The eigenstructure figures render from a small comparison (spectra/figures.py)."""

from __future__ import annotations

import pytest

from krenorm.spectra.comparison import run_spectra_comparison

figures = pytest.importorskip("krenorm.spectra.figures", reason="needs the plots extra")


def test_eigenvalue_maps_and_learning_curves_render(tmp_path):
    comparison = run_spectra_comparison(eigen_dimension=8, curve_dimension=8,
                                        sample_sizes=(8, 16), theory_sample_sizes=(8, 16),
                                        seeds=(0,), ridge=0.1)
    maps = figures.plot_eigenvalue_maps(comparison, tmp_path / "maps.png")
    curves = figures.plot_learning_curves(comparison, tmp_path / "curves.png")
    for path in (maps, curves):
        assert path.stat().st_size > 10_000
