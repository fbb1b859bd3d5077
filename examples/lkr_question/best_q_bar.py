"""REPORT.md, "Beyond leading order", point 2. Lower bound of the Gaussian-equivalent CNN: min over SPD Q̄ of the test loss ε(Q̄) (test-set
oracle), MNIST 3 vs 5, P = 200, T = 0.05, mask = stride = 7 (λ1 = 4 is absorbed by Q̄)."""
import json
import sys
import time

import numpy as np, torch
from scipy import optimize
from krenorm.architectures import ArchitectureSpec
from krenorm.data import load_dataset
from krenorm.theory.one_loop import kernel_family, loss_derivatives, one_loop_test_loss
torch.set_num_threads(1)
t0 = time.process_time()
data = load_dataset("mnist", (3, 5), 200, 400, standardize="global", labels="pm1", seed=0)
fam = kernel_family(ArchitectureSpec("cnn", "erf", mask=7, stride=7), data.x_train, data.x_test, lambda1=4.0)
start = one_loop_test_loss(fam, data.y_train, data.y_test, width=25, temperature=0.05)
r = start.q_bar.shape[0]
low = torch.tril_indices(r, r)
half = torch.where(fam.order_basis.sum((1, 2)) > 1.5, 0.5, 1.0)  # θ-gradient → symmetric ∂ε/∂Q
def unpack(p):
    L = torch.zeros(r, r, dtype=torch.float64); L[low[0], low[1]] = torch.as_tensor(p); return L
calls = 0
def f(p):
    global calls; calls += 1
    L = unpack(p); Q = L @ L.T
    d = loss_derivatives(fam, fam.theta(Q), data.y_train, data.y_test, 0.05)
    G = torch.einsum("a,aij->ij", d.gradient * half, fam.order_basis)
    grad = (2 * G @ L)[low[0], low[1]]
    return d.value, grad.numpy()
L0 = torch.linalg.cholesky(start.q_bar)[low[0], low[1]].numpy()
res = optimize.minimize(f, L0, jac=True, method="L-BFGS-B", options={"maxiter": 300})
L = unpack(res.x)
out = {"best_q_bar_test_loss": float(res.fun), "start_leading_N25": start.leading, "iterations": int(res.nit),
       "calls": calls, "message": str(res.message), "cpu_s": time.process_time() - t0,
       "q_bar": (L @ L.T).tolist()}
print(json.dumps({k: v for k, v in out.items() if k != "q_bar"}))
json.dump(out, open(sys.argv[1], "w"), indent=1)
