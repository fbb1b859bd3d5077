"""Anderson mixing (krenorm.fixed_point): on a linear contraction g(x) = Mx + b in d
dimensions, type-II Anderson with memory ≥ d is a Krylov method and reaches the fixed point
(I − M)⁻¹b after at most d + 1 extrapolations (in exact arithmetic); a plain damped iteration
with the same number of steps is still far away. Also the damped first step and validation."""

import pytest
import torch

from krenorm.fixed_point import AndersonMixer


def _linear_problem(d: int = 5):
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    matrix = q @ torch.diag(torch.linspace(0.1, 0.9, d, dtype=torch.float64)) @ q.T
    offset = torch.randn(d, generator=generator, dtype=torch.float64)
    solution = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - matrix, offset)
    return matrix, offset, solution


@pytest.mark.parametrize("mixing", [1.0, 0.5])
def test_anderson_solves_a_linear_fixed_point_in_d_plus_one_steps(mixing):
    matrix, offset, solution = _linear_problem()
    mixer = AndersonMixer(8, mixing=mixing)
    x = torch.zeros(5, dtype=torch.float64)
    for _ in range(7):
        x = mixer.propose(x, matrix @ x + offset - x)
    assert torch.allclose(x, solution, atol=1e-10)
    plain = torch.zeros(5, dtype=torch.float64)
    for _ in range(7):
        plain = plain + mixing * (matrix @ plain + offset - plain)
    assert (plain - solution).norm() > 1e-2  # the acceleration is what solved it


def test_first_step_is_damped_and_reset_forgets_history():
    mixer = AndersonMixer(3, mixing=0.25)
    x, r = torch.ones(2, dtype=torch.float64), torch.tensor([4.0, -8.0], dtype=torch.float64)
    assert torch.equal(mixer.propose(x, r), x + 0.25 * r)
    mixer.reset()
    assert torch.equal(mixer.propose(x, r), x + 0.25 * r)


@pytest.mark.parametrize(("memory", "mixing"), [(0, 1.0), (2, 0.0), (2, 1.5)])
def test_invalid_settings_are_refused(memory, mixing):
    with pytest.raises(ValueError):
        AndersonMixer(memory, mixing=mixing)
