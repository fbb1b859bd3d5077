"""Study (issue 17): sampled deep FC networks vs the deep FC theory (docs/math/deep.md §3).

Deep linear FC networks (σ = identity, L = 2, equal widths) on MNIST 0 vs 1 at 7×7 (N_0 = 49),
P = 50 training and 200 test images, T = 0.05, priors λ_0 = λ_1 = 1 and readout λ_2 = 5
(a small prior kernel, so that the width matters: U = Q_1 Q_2 ≈ 2.4–3), widths N = 10, 20, 40
(α = 5, 2.5, 1.25). Each width: R independent HMC chains (krenorm.networks.transitions.HMCKernel,
mass = prior precision per layer, `DeepFullPosterior`), started from the prior, burn-in with
acceptance-driven
step-size adaptation, then every step recorded. Observable: the posterior average of the
instantaneous test MSE (docs/math/theory.md §4), per chain; the standard error is over chains.
Theory: `fit_deep_theory` (identity activation, which is the deep linear back-propagating
renormalization, tests/test_deep_theory.py). Agreement: deviation ± SE per width and the
weighted 1/N fit of krenorm.experiments.agreement.

`--activation erf --depth 3` runs the same study for nonlinear or deeper networks (the theory is
then the central-ansatz deep FC action, no longer an exact linear result); `--kind cnn` a deep
CNN (mask 3 stride 2, then mask 2: 4 final positions; formulation A of docs/math/deep.md §4).

    KRENORM_SHARED_DATASETS=/work/shared/datasets PYTHONPATH=src python \
        benchmarks/deep_linear_study.py [--steps 1000] [--burn-in 300] [--replicas 8] \
        [--activation identity] [--depth 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from krenorm.data import load_dataset
from krenorm.deep_architecture import DeepArchitectureSpec
from krenorm.experiments.agreement import fit_inverse_width, value_with_error
from krenorm.kernels.patches import PatchGeometry
from krenorm.networks.deep_modules import DeepFullPosterior, DeepNetwork
from krenorm.networks.transitions import HMCKernel
from krenorm.theory.deep_fit import fit_deep_theory

TEMPERATURE = 0.05
#: `--kind cnn`: 7×7 → 3×3 (mask 3, stride 2) → 2×2 (mask 2, stride 1): 4 final positions.
CNN_GEOMETRIES = [PatchGeometry(3, 2, 0), PatchGeometry(2, 1, 0)]


def scale_of(theory) -> float:
    """U = Π Q_ℓ (FC, GAP), or the mean diagonal of the last layer's Q (CNN, LCN)."""
    if theory.total_scale is not None:
        return float(theory.total_scale)
    point = theory.point
    return float((torch.diagonal(point) if point.ndim == 2 else point).mean())


def make_spec(args) -> DeepArchitectureSpec:
    if args.kind == "fc":
        return DeepArchitectureSpec("fc", args.activation, args.depth)
    return DeepArchitectureSpec(args.kind, args.activation, args.depth,
                                CNN_GEOMETRIES[:args.depth])


def sample_test_loss(x, y, x_test, y_test, width: int, args) -> tuple[float, float, float]:
    spec = make_spec(args)
    generator = torch.Generator().manual_seed(1000 + width)
    network = DeepNetwork(spec, tuple(x.shape[1:]), [width] * args.depth, args.priors,
                          replicas=args.replicas, generator=generator)
    density = DeepFullPosterior(network, x, y, temperature=TEMPERATURE)
    kernel = HMCKernel(density, 0.05, generator, leapfrog_steps=args.leapfrog)
    per_chain = torch.zeros(args.replicas, dtype=torch.float64)
    acceptance = torch.zeros(args.replicas, dtype=torch.float64)
    for step in range(args.burn_in + args.steps):
        stats = kernel.step()
        if step < args.burn_in:
            # Robbins–Monro-like per-chain adaptation towards acceptance 0.8 during burn-in.
            kernel.step_size = kernel.step_size * torch.exp(0.05 * (stats.acceptance - 0.8))
            continue
        acceptance += stats.acceptance
        with torch.no_grad():
            outputs = network(x_test)
        per_chain += ((outputs - y_test) ** 2).mean(1)
    per_chain /= args.steps
    return (float(per_chain.mean()), float(per_chain.std() / math.sqrt(args.replicas)),
            float((acceptance / args.steps).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--burn-in", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--widths", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--activation", default="identity")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--kind", default="fc", choices=["fc", "cnn", "lcn", "cnn-gap"])
    parser.add_argument("--priors", type=float, nargs="+", default=None,
                        help="λ_0..λ_L (default 1 for the hidden layers, 5 for the readout)")
    args = parser.parse_args()
    if args.priors is None:
        args.priors = [1.0] * args.depth + [5.0]
    print(f"{args.kind}, activation {args.activation}, depth {args.depth}, priors {args.priors}, T "
          f"{TEMPERATURE}", flush=True)
    torch.set_num_threads(1)
    data = load_dataset("mnist", (0, 1), n_train=50, n_test=200, side=7, seed=0)
    x, x_test = data.x_train, data.x_test
    if args.kind == "fc":
        x, x_test = x.reshape(50, -1), x_test.reshape(200, -1)
    y, y_test = data.y_train, data.y_test
    spec = make_spec(args)
    rows = []
    for width in args.widths:
        start = time.perf_counter()
        theory = fit_deep_theory(x, y, spec, [float(width)] * args.depth, TEMPERATURE,
                                 args.priors)
        predicted = theory.test_loss(x_test, y_test).loss
        sampled, stderr, acceptance = sample_test_loss(x, y, x_test, y_test, width, args)
        rows.append((width, predicted, sampled, stderr, acceptance, scale_of(theory),
                     time.perf_counter() - start))
        print(rows[-1], flush=True)
    nngp = fit_deep_theory(x, y, spec, math.inf, TEMPERATURE, args.priors).test_loss(
        x_test, y_test).loss
    print(f"\nε_g at N = ∞ (deep NNGP): {nngp:.4f}\n")
    print("| N | α | U = Π Q_ℓ (CNN/LCN: mean Q_ii) | theory ε_g | sampled ε_g | deviation | z "
          "| acceptance | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width, predicted, sampled, stderr, acceptance, scale, seconds in rows:
        deviation = sampled - predicted
        print(f"| {width} | {50 / width:.2f} | {scale:.3f} | {predicted:.4f} | "
              f"{value_with_error(sampled, stderr)} | {value_with_error(deviation, stderr)} | "
              f"{deviation / stderr:+.1f} | {acceptance:.2f} | {seconds:.0f} |")
    fit = fit_inverse_width([r[0] for r in rows], [r[2] - r[1] for r in rows],
                            [r[3] for r in rows])
    print(f"\n1/N fit of the deviation: {fit.to_dict()}")


if __name__ == "__main__":
    main()
