"""Learning index and learning curves (docs/math/spectra.md §4, "Learning curves from a
spectrum"): r(k) for MLP and CNN trees with a numerical scaling check, the eigenlearning solver
against closed forms, and eigenlearning against direct kernel ridge regression."""

import itertools
import math

import pytest
import torch

from krenorm.spectra.eigenlearning import effective_ridge, eigenlearning_prediction
from krenorm.spectra.hypercube import hypercube_spectrum
from krenorm.spectra.kernel_ridge import hypercube_kernel_ridge
from krenorm.spectra.learning_curves import compare_learning_curve, walsh_target
from krenorm.spectra.learning_index import (
    TreeExponents,
    learning_index,
    spanning_subtree,
    tree_exponents,
)
from krenorm.spectra.trees import ArchitectureTree, TreeNode, cnn_tree, mlp_tree


@pytest.mark.parametrize("depth", [1, 3])
def test_mlp_learning_index_is_the_degree(depth):
    tree = mlp_tree(64, depth, "relu", bias_variance=0.1)
    for degree in range(6):
        assert learning_index(tree, [degree]) == pytest.approx(degree)
    exponents = TreeExponents(leaf=(1.0,), fan_in=(0.0,) * len(tree.nodes))
    assert learning_index(tree, [4], exponents) == 4.0


def test_cnn_learning_index_counts_patches_of_the_spanning_subtree():
    # d = 16, patches n0 = 4 = d^{1/2}, a hidden layer per patch (c = 1), a hidden node joining
    # the 4 patches (c = 4 = d^{1/2}) and the readout: r(k) = |k|/2 + (number of patches hit)/2.
    tree = cnn_tree(16, [4, 4], activation="relu", bias_variance=0.1)
    exponents = tree_exponents(tree)
    assert exponents.leaf == pytest.approx((0.5,) * 4)
    assert learning_index(tree, [2, 0, 0, 1]) == pytest.approx(2.5)
    assert learning_index(tree, [3, 0, 0, 0]) == pytest.approx(2.0)
    assert learning_index(tree, [1, 1, 1, 1]) == pytest.approx(4.0)
    assert learning_index(tree, [0, 0, 0, 0]) == 0.0
    for degrees in itertools.product(range(5), repeat=4):
        frequency = sum(degrees)
        r = learning_index(tree, degrees)
        assert r <= frequency + 1e-12  # CNN: r ≤ |k| (MLP: r = |k|)
        assert (r == pytest.approx(frequency)) == (sum(k > 0 for k in degrees) == frequency)
    # T(k): leaf → layer-1 node → the joining node → readout, once per touched patch.
    assert spanning_subtree(tree, [1, 0, 0, 2]) == frozenset({0, 3, 4, 7, 8, 9})
    # One hidden layer and a weightless readout cannot multiply patches: r = ∞, and indeed λ = 0.
    shallow = cnn_tree(8, [4], activation="relu", bias_variance=0.1)
    assert learning_index(shallow, [1, 1]) == math.inf
    assert float(hypercube_spectrum(shallow).eigenvalues[0b10001]) == pytest.approx(0, abs=1e-15)


def pixel_tree(dimension):
    """d single-coordinate leaves, a hidden erf node on each, joined by a hidden erf root:
    α0 = 0 (n0 = 1), α_root = 1 (c = d), so r(S) = |S|."""
    nodes = [TreeNode(coordinates=(i,)) for i in range(dimension)]
    nodes += [TreeNode((i,), (), "erf", 1.0, 0.3) for i in range(dimension)]
    nodes.append(TreeNode(tuple(range(dimension, 2 * dimension)), (), "erf", 1.0, 0.3))
    return ArchitectureTree(tuple(nodes), dimension)


def test_fan_in_exponent_matches_exact_spectra():
    # λ_S d^{r(S)} with r = |S| from the fan-in term alone changes by < 10 % from d = 8 to 16
    # (measured ≤ 5.4 %); one unit off in r would change it by a factor 2.
    scaled = {}
    for dimension in (8, 16):
        tree = pixel_tree(dimension)
        eigenvalues = hypercube_spectrum(tree).eigenvalues
        scaled[dimension] = []
        for size in range(1, 5):
            degrees = [1] * size + [0] * (dimension - size)
            assert learning_index(tree, degrees) == pytest.approx(size)
            scaled[dimension].append(float(eigenvalues[(1 << size) - 1]) * dimension**size)
    for small, large in zip(scaled[8], scaled[16], strict=True):
        assert abs(large / small - 1) < 0.1


def test_learning_index_needs_a_tree_and_matching_degrees():
    dag = cnn_tree(7, [3, 2], strides=[1, 1], activation="erf")
    with pytest.raises(ValueError, match="DAG"):
        learning_index(dag, [1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="one degree per patch"):
        learning_index(mlp_tree(5, 1), [1, 1])


def f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_effective_ridge_matches_the_flat_spectrum_closed_form():
    # M equal eigenvalues λ: n κ² + (nλ − Mλ − δ) κ − δλ = 0.
    eigenvalue, modes, n = 0.01, 300.0, 120
    for ridge in (0.0, 1e-3, 0.5):
        b = n * eigenvalue - modes * eigenvalue - ridge
        closed = (-b + math.sqrt(b * b + 4 * n * ridge * eigenvalue)) / (2 * n)
        solved = effective_ridge(f64(eigenvalue), n, ridge, f64(modes))
        assert solved == pytest.approx(closed, rel=1e-10)
    # Ridgeless: L = n/M, E0 = M/(M − n), test MSE = (1 − n/M)·P (+ E0 σ²).
    prediction = eigenlearning_prediction(f64(eigenvalue), f64(2.0), n, 0.0, 0.1, f64(modes))
    assert prediction.overfitting_coefficient == pytest.approx(modes / (modes - n))
    expected = (1 - n / modes) * 2.0 + modes / (modes - n) * 0.1
    assert prediction.test_mse == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="rank"):
        effective_ridge(f64(eigenvalue), 300, 0.0, f64(modes))
    with pytest.raises(ValueError, match="positive semi-definite"):
        effective_ridge(f64(1.0, -0.5), 10, 0.1)


def test_learnability_grows_with_samples_and_the_solver_satisfies_the_equation():
    eigenvalues = hypercube_spectrum(cnn_tree(10, [2, 5], activation="relu", bias_variance=0.2))
    values = eigenvalues.eigenvalues
    target = torch.zeros_like(values)
    target[0b111] = 1.0
    previous = 0.0
    for n in (10, 100, 1000, 10000):
        kappa = effective_ridge(values, n, 1e-3)
        residual = float((values / (values + kappa)).sum() + 1e-3 / kappa - n)
        assert abs(residual) < 1e-8 * n
        learned = eigenlearning_prediction(values, target, n, 1e-3).target_learnability
        assert learned > previous
        previous = learned


def test_eigenlearning_agrees_with_kernel_ridge_regression():
    # d = 14 (16384 points, test error exact over all of them), i.i.d. uniform training points,
    # ridge 0.1, label noise 0.05, a target with degree-1, 2 and 3 Walsh components.
    dimension = 14
    tree = cnn_tree(dimension, [2, 7], activation="erf", bias_variance=0.2)
    target = walsh_target(dimension, [(0,), (0, 1), (2, 3, 4)], [0.6, 0.6, 0.5])
    comparison = compare_learning_curve(tree, target, (50, 200, 600), range(12), 0.1, 0.05)
    rows = zip(
        comparison.theory,
        comparison.measured_mean(),
        comparison.measured_standard_error(),
        comparison.experiments,
        strict=True,
    )
    for prediction, mean, standard_error, runs in rows:
        # Tolerance from the seed spread: 4 standard errors of the 12-seed mean (t with 11 d.o.f.
        # exceeds 4 with probability 2e-3). Measured |z| ≤ 0.7 here and ≤ 0.9 with 48 seeds,
        # so eigenlearning has no visible finite-size bias at this ridge.
        assert abs(mean - prediction.test_mse) <= 4 * standard_error, (prediction, mean)
        # Teeth: without the overfitting coefficient E0 (1.05–1.28 here) it would fail.
        naive = prediction.test_mse / prediction.overfitting_coefficient
        assert abs(mean - naive) > 4 * standard_error
        # Train MSE = (δ/(nκ))² × test MSE: within 5 % of the seed mean (measured ≤ 1.6 %).
        train = sum(r.train_mse for r in runs) / len(runs)
        assert train == pytest.approx(prediction.train_mse, rel=0.05)


def test_kernel_ridge_validates_its_inputs():
    values = torch.ones(16, dtype=torch.float64)
    with pytest.raises(ValueError, match="ridge must be positive"):
        hypercube_kernel_ridge(values, values, 4, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="one entry per point"):
        hypercube_kernel_ridge(values, torch.ones(8), 4, 0.1, 0.0, 0)
