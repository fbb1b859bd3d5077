"""Kernel adaptation at the sampled FC point of the LKR study (REPORT.md, "Beyond leading
order", point 3): krenorm.adaptive's saddle point at χ = 1 (standard scaling) on MNIST 3 vs 5,
P = 200, 400 test images, T = κ = 0.05, λ1 = 16 (g_w = 1/16), λ0 = 1 (g_v = 1), erf.

    python examples/lkr_question/adaptive_fc.py OUT.json WIDTHS {full|tree} [SEEDS] [PARTICLES]
    e.g. python examples/lkr_question/adaptive_fc.py out.json 1000000000,50,100,200 full 0 8192
"""

import json
import sys
import time

import torch

from krenorm.adaptive.nonlinear import AdaptiveSolverSettings, solve_adaptive_saddle_point
from krenorm.adaptive.scaling import ScalingRegime
from krenorm.data import load_dataset

torch.set_num_threads(1)
data = load_dataset("mnist", (3, 5), 200, 400, standardize="global", labels="pm1", seed=0)
x_train, x_test = data.x_train.reshape(200, -1), data.x_test.reshape(400, -1)
widths = [int(float(w)) for w in sys.argv[2].split(",")]
full = sys.argv[3] == "full"
seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0]
particles = int(sys.argv[5]) if len(sys.argv) > 5 else 8192
rows = []
for seed in seeds:
    for width in widths:
        started = time.process_time()
        regime = ScalingRegime(chi=1.0, width=width, input_dim=784, g_w=1 / 16, g_v=1.0,
                               kappa=0.05)
        solution = solve_adaptive_saddle_point(
            x_train, data.y_train, x_test, regime, "erf",
            AdaptiveSolverSettings(seed=seed, n_particles=particles), fluctuations=full)
        row = {"width": width, "full": full, "seed": seed, "particles": particles,
               **solution.test_loss(data.y_test), "ess": solution.final_ess,
               "converged": solution.converged, "cpu_s": time.process_time() - started}
        print(json.dumps(row), flush=True)
        rows.append(row)
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(rows, handle, indent=1)
