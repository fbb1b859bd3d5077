"""Adaptive saddle point for a nonlinear φ (docs/math/adaptive.md §2).

Single-neuron law, M = (g_w/N)[χ t tᵀ − c (Ĉ + κ)⁻¹]:

    p(v) ∝ N(v; 0, (g_v/D) I) · exp{(a/2)(t·φ)² − (c g_w/2N) φᵀ(Ĉ + κ)⁻¹φ},  φ = φ(Xv),
    a = g_w χ/N,  t = (Ĉ + κ)⁻¹y = (y − f̄)/κ,  Ĉ = g_w E_p[φφᵀ],  f̄ = Ĉ(Ĉ + κ)⁻¹y,

with c = 0 at tree level (fluctuations=False) and c = 1 for the full saddle point.

Solved by a fixed point on Ĉ (Anderson-accelerated, plain damping as the fallback), annealed in
χ from the NNGP solution Ĉ = K̂ (a cold start diverges at large χ).

Single-neuron averages: self-normalised importance sampling over a particle set, with an MCMC
fallback when the effective sample size collapses (a resample–move sequential Monte Carlo
sampler). The particles start as prior draws; at every point they are distributed as an
"anchor" law (the prior times the tilt τ₀ at which they were last moved), and any tilt τ is
reached by the weights

    w_s ∝ exp{τ(φ_s) − τ₀(φ_s)},   ESS = (Σw)²/Σw².

Within one χ the particles are fixed, so the map Ĉ ↦ Ĉ' is deterministic. The next χ is the
largest (at most max_anneal_ratio times the last) whose weights at the current f̄ keep a
conditional ESS ≥ target_ess_fraction (adaptive tempering, see _next_chi). When the ESS at the
solved fixed point falls below resample_ess_fraction, the particles are resampled (systematic)
and moved by preconditioned MALA steps that leave the current law invariant (preconditioner:
the particle covariance; step adapted towards acceptance 0.57); the moved set becomes the anchor
and the fixed point is re-solved (at most three rounds per χ). Every χ reports its final ESS.

Test side: ĉ* = g_w E_p[φ(X*v) φ(Xv)ᵀ], mean ĉ*ᵀ(Ĉ + κ)⁻¹y and variance
(1/χ)[ĉ** − ĉ*ᵀ(Ĉ + κ)⁻¹ĉ*]; ⟨VᵀV⟩/N = E_p[v vᵀ] (tree level: independent neurons).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from krenorm._validation import check_finite, check_vectors
from krenorm.adaptive.linear_theory import posterior_test_loss
from krenorm.adaptive.scaling import ScalingRegime, nngp_kernel_hat
from krenorm.fixed_point import AndersonMixer
from krenorm.kernels.activations import Activation, get_activation
from krenorm.linalg import factor_noisy_kernel

#: What to change when the particle estimate of Ĉ + κ is not positive definite.
PARTICLES_ADVICE = "increase kappa or n_particles"
#: Past iterates kept by the Anderson-accelerated fixed point.
_ANDERSON_MEMORY = 6
#: MALA's optimal acceptance (Roberts & Rosenthal), the target of the step adaptation.
_MALA_TARGET_ACCEPTANCE = 0.57

#: g in the fixed point x = g(x), on the flattened entries of Ĉ.
StepMap = Callable[[torch.Tensor], torch.Tensor]
#: (solution, iterations, residual, converged) of a fixed-point solve.
FixedPointResult = tuple[torch.Tensor, int, float, bool]


@dataclass(frozen=True)
class AdaptiveSolverSettings:
    """Numerical settings of the annealed tree-level solver (see module docstring)."""

    n_particles: int = 8192
    max_anneal_ratio: float = 4.0
    max_anneal_steps: int = 400
    target_ess_fraction: float = 0.7
    resample_ess_fraction: float = 0.5
    mcmc_moves: int = 10
    damping: float = 0.5
    tolerance: float = 1e-7
    max_iterations: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_particles", "max_anneal_steps", "mcmc_moves", "max_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if not self.max_anneal_ratio > 1.0:
            raise ValueError(f"max_anneal_ratio must exceed 1, got {self.max_anneal_ratio}.")
        for name in ("target_ess_fraction", "resample_ess_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}.")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"damping must lie in (0, 1], got {self.damping}.")
        if not self.tolerance > 0.0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AnnealStep:
    """Diagnostics of one χ of the annealing: ess of the final weights (out of n_particles),
    moves: resample–move rounds taken at this χ, acceptance: their mean MALA acceptance (None
    without moves), iterations and residual |f̄' − f̄|/|y| of the last fixed-point solve."""

    chi: float
    ess: float
    n_particles: int
    moves: int
    acceptance: float | None
    iterations: int
    residual: float
    converged: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AdaptiveSolution:
    """Adaptive prediction of a nonlinear network at one χ (tree level, or the full saddle
    point when fluctuations is True)."""

    regime: ScalingRegime
    activation: str
    fluctuations: bool
    train_mean: torch.Tensor
    test_mean: torch.Tensor
    test_variance: torch.Tensor
    hidden_kernel: torch.Tensor
    weight_covariance: torch.Tensor
    steps: tuple[AnnealStep, ...]

    @property
    def converged(self) -> bool:
        return self.steps[-1].converged

    @property
    def final_ess(self) -> float:
        return self.steps[-1].ess

    def test_loss(self, y_test: torch.Tensor) -> dict[str, float]:
        """Posterior-averaged instantaneous test MSE = bias² + variance (docs/math/theory.md §4)."""
        return posterior_test_loss(y_test, self.test_mean, self.test_variance)

    def to_dict(self) -> dict:
        return {
            "regime": self.regime.to_dict(),
            "activation": self.activation,
            "fluctuations": self.fluctuations,
            "train_mean": self.train_mean.tolist(),
            "test_mean": self.test_mean.tolist(),
            "test_variance": self.test_variance.tolist(),
            "weight_covariance": self.weight_covariance.tolist(),
            "steps": [step.to_dict() for step in self.steps],
            "converged": self.converged,
            "final_ess": self.final_ess,
        }


def _ess(weights: torch.Tensor) -> float:
    """Kish effective sample size (Σw)²/Σw² of normalised weights."""
    return float(1.0 / (weights**2).sum())


def _predictor(kernel: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Training predictor Ĉ(Ĉ + κ)⁻¹y = y − κ(Ĉ + κ)⁻¹y."""
    factor = factor_noisy_kernel(kernel, kappa, what="Ĉ + κ", advice=PARTICLES_ADVICE)
    return y - kappa * torch.cholesky_solve(y[:, None], factor)[:, 0]


@dataclass(frozen=True)
class _Tilt:
    """ln of the single-neuron tilt: (a/2)(t·φ)² − (c/2) φᵀBφ, with B = (Ĉ + κ)⁻¹ and
    c = g_w/N for the full saddle point, c = 0 (B unused) at tree level."""

    strength: float
    t: torch.Tensor
    fluctuation: float
    inverse: torch.Tensor | None

    def log_tilt(self, features: torch.Tensor) -> torch.Tensor:
        value = 0.5 * self.strength * (features @ self.t) ** 2
        if self.inverse is not None:  # set exactly when the fluctuation term is on
            value = value - 0.5 * self.fluctuation * ((features @ self.inverse) * features).sum(-1)
        return value

    def with_strength(self, strength: float) -> _Tilt:
        return _Tilt(strength, self.t, self.fluctuation, self.inverse)


def _tilt_from_kernel(kernel: torch.Tensor, y: torch.Tensor, kappa: float, strength: float,
                      fluctuation: float) -> _Tilt:
    """t = (Ĉ + κ)⁻¹y and, with fluctuations, B = (Ĉ + κ)⁻¹ (one Cholesky)."""
    factor = factor_noisy_kernel(kernel, kappa, what="Ĉ + κ", advice=PARTICLES_ADVICE)
    t = torch.cholesky_solve(y[:, None], factor)[:, 0]
    inverse = torch.cholesky_inverse(factor) if fluctuation else None
    return _Tilt(strength, t, fluctuation, inverse)


class _ParticleLaw:
    """Particles v_s (S, D) with their features φ(X v_s) (S, P), distributed as the anchor law
    prior · exp(anchor tilt); weights to any other tilt by the module-docstring formula."""

    def __init__(self, x: torch.Tensor, activation: Activation, variance: float,
                 particles: torch.Tensor, anchor: _Tilt | None):
        self.x = x
        self.activation = activation
        self.variance = variance
        self.particles = particles
        self.features = activation(particles @ x.T)
        zero = torch.zeros(len(particles), dtype=torch.float64)
        self.anchor_log_tilt = zero if anchor is None else anchor.log_tilt(self.features)

    def log_weights(self, tilt: _Tilt) -> torch.Tensor:
        return tilt.log_tilt(self.features) - self.anchor_log_tilt

    def weights(self, tilt: _Tilt) -> torch.Tensor:
        return torch.softmax(self.log_weights(tilt), 0)

    def kernel(self, weights: torch.Tensor, g_w: float) -> torch.Tensor:
        return g_w * (self.features.T * weights) @ self.features

    def log_target(self, v: torch.Tensor, tilt: _Tilt) -> tuple[torch.Tensor, torch.Tensor]:
        """ln p(v) up to a constant and its gradient, for a batch of v."""
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            features = self.activation(v @ self.x.T)
            value = -0.5 * (v * v).sum(1) / self.variance + tilt.log_tilt(features)
            (gradient,) = torch.autograd.grad(value.sum(), v)
        return value.detach(), gradient


def _anderson_fixed_point(step_map: StepMap, start: torch.Tensor, scale: float,
                          settings: AdaptiveSolverSettings) -> FixedPointResult:
    """Solve x = g(x) by Anderson acceleration (Walker & Ni 2011) with mixing β = damping and
    memory _ANDERSON_MEMORY, restarting the history when the residual grows tenfold over the
    best seen. Residuals are |g(x) − x|/scale. Returns x, iterations, residual, convergence."""
    x, residual, best = start, math.inf, math.inf
    mixer = AndersonMixer(_ANDERSON_MEMORY, mixing=settings.damping)
    for iteration in range(1, settings.max_iterations + 1):
        mapped = step_map(x)
        r = mapped - x
        residual = float(r.norm() / scale)
        if not math.isfinite(residual):
            break
        if residual < settings.tolerance:
            return mapped, iteration, residual, True
        if residual > 10 * best:
            mixer.reset()
        best = min(best, residual)
        x = mixer.propose(x, r)
    return x, settings.max_iterations, residual, False


def _damped_fixed_point(step_map: StepMap, start: torch.Tensor, scale: float,
                        settings: AdaptiveSolverSettings) -> FixedPointResult:
    """Damped iteration x ← x + β(g(x) − x), β halved when the residual grows and recovering by
    10 % per contracting step up to settings.damping: the fallback when Anderson fails."""
    x, residual, beta = start, math.inf, settings.damping
    for iteration in range(1, settings.max_iterations + 1):
        mapped = step_map(x)
        previous, residual = residual, float((mapped - x).norm() / scale)
        if residual < settings.tolerance:
            return mapped, iteration, residual, True
        beta = max(beta / 2, 1e-3) if residual > previous else min(1.1 * beta, settings.damping)
        x = x + beta * (mapped - x)
    return x, settings.max_iterations, residual, False


def _solve_fixed_point(law: _ParticleLaw, y: torch.Tensor, start: torch.Tensor, strength: float,
                       fluctuation: float, g_w: float, kappa: float,
                       settings: AdaptiveSolverSettings) -> FixedPointResult:
    """Ĉ = g_w E_p[φφᵀ] with p tilted by (Ĉ + κ)⁻¹ (through t, and B with fluctuations), at
    fixed particles: Anderson on the entries of Ĉ, then damping if that fails. Returns
    Ĉ, iterations, residual |Ĉ' − Ĉ|_F/|Ĉ_start|_F, convergence."""
    size = len(y)

    def step_map(flat_kernel: torch.Tensor) -> torch.Tensor:
        kernel = flat_kernel.reshape(size, size)
        tilt = _tilt_from_kernel(0.5 * (kernel + kernel.T), y, kappa, strength, fluctuation)
        return law.kernel(law.weights(tilt), g_w).reshape(-1)

    scale = float(start.norm())
    result = _anderson_fixed_point(step_map, start.reshape(-1), scale, settings)
    if not result[3]:
        result = _damped_fixed_point(step_map, start.reshape(-1), scale, settings)
    kernel, iterations, residual, converged = result
    return kernel.reshape(size, size), iterations, residual, converged


def _systematic_resample(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of a systematic resample (one uniform offset; variance below multinomial)."""
    count = len(weights)
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    positions = (offset + torch.arange(count, dtype=torch.float64)) / count
    cumulative = torch.cumsum(weights, 0)
    cumulative[-1] = 1.0
    return torch.searchsorted(cumulative, positions).clamp_max(count - 1)


def _log_transition(start: torch.Tensor, end: torch.Tensor, start_drift: torch.Tensor,
                    epsilon: float, factor: torch.Tensor) -> torch.Tensor:
    """−|end − start − εΣ∇|²_{Σ⁻¹}/(4ε): the log density of the preconditioned Langevin proposal
    up to a constant that cancels in the Metropolis–Hastings ratio."""
    difference = end - start - epsilon * start_drift
    whitened = torch.linalg.solve_triangular(factor, difference.T, upper=False)
    return -(whitened**2).sum(0) / (4 * epsilon)


def _mala_moves(law: _ParticleLaw, particles: torch.Tensor, tilt: _Tilt, moves: int,
                generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Preconditioned MALA on every particle (preconditioner Σ = particle covariance, so
    v' = v + ε Σ∇ln p + √(2ε) L ξ with Σ = LLᵀ); ε starts at 0.5 and adapts multiplicatively
    towards acceptance 0.57 after each move. Returns the moved particles, mean acceptance."""
    d = particles.shape[1]
    covariance = torch.cov(particles.T).reshape(d, d)
    scale = float(torch.diagonal(covariance).mean())
    factor = torch.linalg.cholesky(covariance + 1e-9 * scale * torch.eye(d, dtype=torch.float64))
    value, gradient = law.log_target(particles, tilt)
    epsilon, acceptances = 0.5, list[float]()
    for _ in range(moves):
        drift = gradient @ covariance
        noise = torch.randn(particles.shape, generator=generator, dtype=torch.float64)
        proposal = particles + epsilon * drift + math.sqrt(2 * epsilon) * noise @ factor.T
        new_value, new_gradient = law.log_target(proposal, tilt)
        new_drift = new_gradient @ covariance

        log_ratio = (
            new_value - value
            + _log_transition(proposal, particles, new_drift, epsilon, factor)
            - _log_transition(particles, proposal, drift, epsilon, factor)
        )  # fmt: skip
        probability = torch.exp(log_ratio.clamp(max=0.0).nan_to_num(nan=-math.inf))
        accept = torch.rand(len(particles), generator=generator, dtype=torch.float64) < probability
        particles = torch.where(accept[:, None], proposal, particles)
        value = torch.where(accept, new_value, value)
        gradient = torch.where(accept[:, None], new_gradient, gradient)
        acceptance = float(probability.mean())
        acceptances.append(acceptance)
        epsilon *= math.exp(acceptance - _MALA_TARGET_ACCEPTANCE)
    return particles, sum(acceptances) / len(acceptances)


def _next_chi(law: _ParticleLaw, tilt: _Tilt, chi: float, regime: ScalingRegime,
              settings: AdaptiveSolverSettings) -> float:
    """Largest χ' ≤ min(χ_target, ratio·χ) whose incremental weights w' = p_χ'/p_χ at the current
    Ĉ keep a conditional ESS (Σ W w')² / (Σ W w'²) ≥ target_ess_fraction · S, W the current
    normalised weights (Zhou, Johansen & Aston 2016), by bisection in ln χ'. Only the data term
    carries χ. From χ = 0 (the NNGP start) the search reaches down to 2⁻³⁰ χ_target."""
    half_squared_field = 0.5 * (law.features @ tilt.t) ** 2
    current = law.weights(tilt)
    goal = settings.target_ess_fraction

    def conditional_ess(candidate: float) -> float:
        increment = regime.g_w * (candidate - chi) / regime.width * half_squared_field
        increment = torch.exp(increment - increment.max())
        return float((current @ increment) ** 2 / (current @ increment**2))

    upper = regime.chi if chi == 0.0 else min(regime.chi, settings.max_anneal_ratio * chi)
    if conditional_ess(upper) >= goal:
        return upper
    lower = chi if chi > 0.0 else upper * 2.0**-30
    for _ in range(30):
        middle = math.sqrt(lower * upper)
        lower, upper = (middle, upper) if conditional_ess(middle) >= goal else (lower, middle)
    return lower


def _check_inputs(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                  regime: ScalingRegime) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_train = check_vectors("x_train", torch.as_tensor(x_train)).to(torch.float64)
    x_test = check_vectors("x_test", torch.as_tensor(x_test)).to(torch.float64)
    y = torch.as_tensor(y_train, dtype=torch.float64).reshape(-1)
    check_finite("y_train", y)
    if y.shape[0] != x_train.shape[0] or x_train.shape[1] != regime.input_dim:
        raise ValueError(
            f"need x_train (P, D = {regime.input_dim}) and y_train (P,), "
            f"got {tuple(x_train.shape)} and {tuple(y.shape)}."
        )
    if x_test.shape[1] != regime.input_dim:
        raise ValueError(f"x_test has D = {x_test.shape[1]}, expected {regime.input_dim}.")
    return x_train, y, x_test


def solve_adaptive_saddle_point(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    regime: ScalingRegime,
    activation: str | Activation = "erf",
    settings: AdaptiveSolverSettings | None = None,
    fluctuations: bool = False,
) -> AdaptiveSolution:
    """Annealed adaptive saddle point, resample–move importance sampling (module docstring).

    fluctuations=False: tree level; True: the full saddle point of docs/math/adaptive.md, whose
    single-neuron tilt also carries −(g_w/2N) φᵀ(Ĉ + κ)⁻¹φ."""
    settings = settings or AdaptiveSolverSettings()
    act = get_activation(activation)
    x_train, y, x_test = _check_inputs(x_train, y_train, x_test, regime)
    generator = torch.Generator().manual_seed(settings.seed)
    variance, kappa, g_w = regime.first_layer_prior_variance, regime.kappa, regime.g_w
    shape = (settings.n_particles, regime.input_dim)
    particles = math.sqrt(variance) * torch.randn(shape, generator=generator, dtype=torch.float64)
    law = _ParticleLaw(x_train, act, variance, particles, None)
    fluctuation = g_w / regime.width if fluctuations else 0.0
    kernel = nngp_kernel_hat(x_train, None, act, g_w, regime.g_v)
    steps: list[AnnealStep] = []
    chi = 0.0
    while chi < regime.chi:
        if len(steps) == settings.max_anneal_steps:
            raise ValueError(
                f"annealing reached max_anneal_steps = {settings.max_anneal_steps} at "
                f"χ = {chi:.4g} < {regime.chi:.4g}; raise max_anneal_steps or lower "
                "target_ess_fraction."
            )
        current = _tilt_from_kernel(kernel, y, kappa, g_w * chi / regime.width, fluctuation)
        chi = _next_chi(law, current, chi, regime, settings)
        strength = g_w * chi / regime.width
        fixed_point = (strength, fluctuation, g_w, kappa, settings)
        kernel, iterations, residual, converged = _solve_fixed_point(law, y, kernel, *fixed_point)
        tilt = _tilt_from_kernel(kernel, y, kappa, strength, fluctuation)
        weights = law.weights(tilt)
        moves, acceptances = 0, list[float]()
        while _ess(weights) < settings.resample_ess_fraction * len(weights) and moves < 3:
            chosen = law.particles[_systematic_resample(weights, generator)]
            moved, move_acceptance = _mala_moves(law, chosen, tilt, settings.mcmc_moves,
                                                 generator)
            law = _ParticleLaw(x_train, act, variance, moved, tilt)
            kernel, iterations, residual, converged = _solve_fixed_point(
                law, y, kernel, *fixed_point
            )
            tilt = _tilt_from_kernel(kernel, y, kappa, strength, fluctuation)
            weights = law.weights(tilt)
            moves, acceptances = moves + 1, [*acceptances, move_acceptance]
        acceptance = sum(acceptances) / len(acceptances) if acceptances else None
        steps.append(
            AnnealStep(chi, _ess(weights), len(weights), moves, acceptance, iterations, residual,
                       converged)
        )  # fmt: skip
    hidden = law.kernel(weights, g_w)
    test_features = act(law.particles @ x_test.T)
    cross = g_w * (law.features.T * weights) @ test_features
    test_diagonal = g_w * weights @ test_features**2
    factor = factor_noisy_kernel(hidden, kappa, what="Ĉ + κ", advice=PARTICLES_ADVICE)
    solved = torch.cholesky_solve(cross, factor)
    second = (law.particles.T * weights) @ law.particles
    return AdaptiveSolution(
        regime=regime,
        activation=act.name,
        fluctuations=fluctuations,
        train_mean=y - kappa * tilt.t,
        test_mean=cross.T @ torch.cholesky_solve(y[:, None], factor)[:, 0],
        test_variance=(test_diagonal - (cross * solved).sum(0)).clamp_min(0.0) / regime.chi,
        hidden_kernel=hidden,
        weight_covariance=0.5 * (second + second.T),
        steps=tuple(steps),
    )
