"""REPORT.md, "Beyond leading order", point 2: the lower bound of the Gaussian-equivalent CNN,
min over SPD Q̄ of the test loss ε(Q̄) (a test-set oracle), on MNIST 3 vs 5, P = 200,
400 test images, T = 0.05, mask = stride = 7 (λ1 = 4 is absorbed by Q̄). Q̄ = L Lᵀ with L lower
triangular, L-BFGS-B on L with the analytic gradient of krenorm.theory.one_loop.

    python examples/lkr_question/best_q_bar.py OUT.json
"""

import json
import sys
import time

import numpy as np
import torch
from scipy import optimize

from krenorm.architectures import ArchitectureSpec
from krenorm.data import load_dataset
from krenorm.theory.one_loop import kernel_family, loss_derivatives, one_loop_test_loss

torch.set_num_threads(1)
started = time.process_time()
data = load_dataset("mnist", (3, 5), 200, 400, standardize="global", labels="pm1", seed=0)
family = kernel_family(ArchitectureSpec("cnn", "erf", mask=7, stride=7), data.x_train,
                       data.x_test, lambda1=4.0)
start = one_loop_test_loss(family, data.y_train, data.y_test, width=25, temperature=0.05)
size = start.q_bar.shape[0]
lower = torch.tril_indices(size, size)
# θ holds Q̄_ij once for i < j: its gradient is twice the symmetric ∂ε/∂Q̄_ij there.
half = torch.where(family.order_basis.sum((1, 2)) > 1.5, 0.5, 1.0)


def unpack(flat: np.ndarray) -> torch.Tensor:
    factor = torch.zeros(size, size, dtype=torch.float64)
    factor[lower[0], lower[1]] = torch.as_tensor(flat)
    return factor


def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
    factor = unpack(flat)
    derivatives = loss_derivatives(family, family.theta(factor @ factor.T), data.y_train,
                                   data.y_test, 0.05)
    symmetric = torch.einsum("a,aij->ij", derivatives.gradient * half, family.order_basis)
    return derivatives.value, (2 * symmetric @ factor)[lower[0], lower[1]].numpy()


initial = torch.linalg.cholesky(start.q_bar)[lower[0], lower[1]].numpy()
result = optimize.minimize(objective, initial, jac=True, method="L-BFGS-B",
                           options={"maxiter": 300})
factor = unpack(result.x)
out = {"best_q_bar_test_loss": float(result.fun), "start_leading_N25": start.leading,
       "iterations": int(result.nit), "message": str(result.message),
       "cpu_s": time.process_time() - started, "q_bar": (factor @ factor.T).tolist()}
print(json.dumps({key: value for key, value in out.items() if key != "q_bar"}))
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(out, handle, indent=1)
