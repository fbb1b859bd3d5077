"""The Gaussian readout given the hidden layer, in closed form (docs/math/theory.md §1, §4).

With hidden features Φ (P×F, readout normalisation included) fixed, f = Φ a is linear in the
readout a ~ N(0, 1/λ1), so the posterior exp(−|Φa − y|²/(2T) − λ1|a|²/2) is Gaussian:

    precision  B = λ1·1_F + ΦᵀΦ/T,   mean  m = B⁻¹Φᵀy/T = Φᵀ A⁻¹ y/λ1,
    evidence   y ~ N(0, A),  A = T·1_P + ΦΦᵀ/λ1   (each output column independently),

and given the hidden layer the test output is Gaussian with

    mean  Φ* m,   variance  Φ* B⁻¹ Φ*ᵀ = |Φ*|²/λ1 − k*ᵀ A⁻¹ k*,  k* = Φ Φ*ᵀ/λ1.

Two equivalent factorisations are used, whichever is cheaper: the F×F precision B when F ≤ P,
else the P×P evidence covariance A (Woodbury / determinant lemma:
ln det A = P ln T + ln det B − F ln λ1). Everything is batched over the replica axis and
differentiable in Φ, which the collapsed sampler uses for the gradient of the marginal.
"""

from __future__ import annotations

import math

import torch


class GaussianReadout:
    """Closed-form readout posterior of R replicas given features Φ (R, P, F) and targets Y (P, D).

    Cholesky factorisations only (no explicit inverses). A replica whose matrix is not positive
    definite in floating point gets `failed[r] = True` and a log evidence of −inf; callers decide
    whether that is a rejected proposal or an error.
    """

    def __init__(
        self, features: torch.Tensor, targets: torch.Tensor, temperature: float, lambda1: float
    ) -> None:
        if features.ndim != 3:
            raise ValueError(f"features must be (R, P, F), got {tuple(features.shape)}.")
        if targets.ndim != 2 or targets.shape[0] != features.shape[1]:
            raise ValueError(
                f"targets must be (P, D) with P = {features.shape[1]}, got {tuple(targets.shape)}."
            )
        self.features = features
        self.targets = targets.to(features)
        self.temperature = float(temperature)
        self.lambda1 = float(lambda1)
        n_samples, n_features = features.shape[1:]
        self.use_feature_space = n_features <= n_samples
        eye = torch.eye(
            n_features if self.use_feature_space else n_samples,
            dtype=features.dtype,
            device=features.device,
        )
        if self.use_feature_space:
            gram = features.transpose(1, 2) @ features  # ΦᵀΦ (R, F, F)
            matrix = self.lambda1 * eye + gram / self.temperature  # B
        else:
            gram = features @ features.transpose(1, 2)  # ΦΦᵀ (R, P, P)
            matrix = self.temperature * eye + gram / self.lambda1  # A
        # Symmetrise: the product is symmetric only up to rounding and Cholesky reads one triangle.
        matrix = 0.5 * (matrix + matrix.transpose(1, 2))
        cholesky, info = torch.linalg.cholesky_ex(matrix)
        self.failed = info != 0
        # A failed factor holds garbage; replace it by the identity so the batch stays finite and
        # mark the replica through `failed` (its log evidence is −inf).
        self.cholesky = torch.where(self.failed[:, None, None], eye, cholesky)
        self._sample_gram = None if self.use_feature_space else gram

    # --- evidence -------------------------------------------------------------------------------

    def log_evidence(self) -> torch.Tensor:
        """ln N(Y; 0, A) summed over output columns, per replica (R,); −inf where factorisation
        failed. Differentiable in the features."""
        n_replicas, n_samples, n_features = self.features.shape
        n_outputs = self.targets.shape[1]
        log_det_factor = 2 * torch.log(torch.diagonal(self.cholesky, dim1=1, dim2=2)).sum(-1)
        squared_targets = (self.targets**2).sum()
        if self.use_feature_space:
            projected = self.features.transpose(1, 2) @ self.targets  # Φᵀy (R, F, D)
            whitened = torch.linalg.solve_triangular(self.cholesky, projected, upper=False)
            quadratic = (squared_targets - (whitened**2).sum((1, 2)) / self.temperature) / (
                self.temperature
            )
            log_det = (
                n_samples * math.log(self.temperature)
                + log_det_factor
                - n_features * math.log(self.lambda1)
            )
        else:
            targets = self.targets.expand(n_replicas, -1, -1)
            whitened = torch.linalg.solve_triangular(self.cholesky, targets, upper=False)
            quadratic = (whitened**2).sum((1, 2))
            log_det = log_det_factor
        constant = n_samples * n_outputs * math.log(2 * math.pi)
        value = -0.5 * (quadratic + n_outputs * log_det + constant)
        return torch.where(self.failed, torch.full_like(value, -math.inf), value)

    # --- posterior moments ----------------------------------------------------------------------

    def _solve_evidence(self, right: torch.Tensor) -> torch.Tensor:
        """A⁻¹ right for right (R, P, K) (P-space factorisation only)."""
        return torch.cholesky_solve(right, self.cholesky, upper=False)

    def readout_mean(self) -> torch.Tensor:
        """m = B⁻¹ΦᵀY/T = ΦᵀA⁻¹Y/λ1, shape (R, F, D)."""
        projected = self.features.transpose(1, 2) @ self.targets
        if self.use_feature_space:
            return torch.cholesky_solve(projected, self.cholesky, upper=False) / self.temperature
        targets = self.targets.expand(self.features.shape[0], -1, -1)
        return self.features.transpose(1, 2) @ self._solve_evidence(targets) / self.lambda1

    def predictive(self, test_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (R, Pt, D) and variance (R, Pt) of the output at test features Φ* (R, Pt, F)
        given the hidden layer: Φ*m and Φ*B⁻¹Φ*ᵀ (network output, no T added)."""
        if self.use_feature_space:
            mean = test_features @ self.readout_mean()
            whitened = torch.linalg.solve_triangular(
                self.cholesky, test_features.transpose(1, 2), upper=False
            )
            return mean, (whitened**2).sum(1)
        cross = test_features @ self.features.transpose(1, 2) / self.lambda1  # k*ᵀ (R, Pt, P)
        targets = self.targets.expand(self.features.shape[0], -1, -1)
        mean = cross @ self._solve_evidence(targets)
        whitened = torch.linalg.solve_triangular(self.cholesky, cross.transpose(1, 2), upper=False)
        prior_variance = (test_features**2).sum(-1) / self.lambda1
        # Rounding can leave a tiny negative difference when the posterior variance is ~0.
        return mean, (prior_variance - (whitened**2).sum(1)).clamp_min(0.0)

    def expected_squared_error(
        self, test_features: torch.Tensor, test_targets: torch.Tensor
    ) -> torch.Tensor:
        """E[(y − f)²] averaged over points and summed over outputs, given the hidden layer:
        (1/Pt) Σ_t [ |y_t − Φ*_t m|² + D·Φ*_t B⁻¹ Φ*_tᵀ ], per replica (R,)."""
        mean, variance = self.predictive(test_features)
        bias = ((test_targets.to(mean) - mean) ** 2).sum(-1)
        return (bias + mean.shape[-1] * variance).mean(-1)

    def readout_block_second_moments(self, width: int, positions: int) -> torch.Tensor:
        """S_ij = (1/D) Σ_{k,d} E[a_{k,i,d} a_{k,j,d} | hidden layer] for the readout laid out as
        (N, positions, D), per replica (R, positions, positions): posterior covariance plus the
        outer product of the mean, summed over channels k (docs/math/theory.md §3 order
        parameter)."""
        n_replicas = self.features.shape[0]
        n_outputs = self.targets.shape[1]
        mean = self.readout_mean().reshape(n_replicas, width, positions, n_outputs)
        mean_part = torch.einsum("rkid,rkjd->rij", mean, mean) / n_outputs
        if self.use_feature_space:
            eye = torch.eye(self.cholesky.shape[-1], dtype=mean.dtype, device=mean.device)
            covariance = torch.cholesky_solve(eye.expand_as(self.cholesky), self.cholesky)
            blocks = covariance.reshape(n_replicas, width, positions, width, positions)
            covariance_part = torch.einsum("rkikj->rij", blocks)
        else:
            # Σ_k (B⁻¹)_{ki,kj} = (1/λ1)[N δ_ij − (1/λ1) Σ_k (ΦᵀA⁻¹Φ)_{ki,kj}]
            solved = self._solve_evidence(self.features)
            features = self.features.reshape(n_replicas, -1, width, positions)
            solved = solved.reshape(n_replicas, -1, width, positions)
            data_part = torch.einsum("rpki,rpkj->rij", features, solved) / self.lambda1
            eye = torch.eye(positions, dtype=mean.dtype, device=mean.device)
            covariance_part = (width * eye - data_part) / self.lambda1
        return covariance_part + mean_part

    def sample_readout(self, generator: torch.Generator) -> torch.Tensor:
        """One exact draw a ~ p(a | hidden layer, data), shape (R, F, D).

        F-space: a = m + L_B⁻ᵀ ξ. P-space (Matheron's rule): draw a0 ~ N(0, 1/λ1) and
        ε ~ N(0, T), then a = a0 + ΦᵀA⁻¹(Y − Φa0 − ε)/λ1.
        """
        n_replicas, n_samples, n_features = self.features.shape
        n_outputs = self.targets.shape[1]
        dtype, device = self.features.dtype, generator.device
        if self.use_feature_space:
            noise = torch.randn(n_replicas, n_features, n_outputs, generator=generator,
                                dtype=dtype, device=device)
            noise = noise.to(self.features.device)
            correlated = torch.linalg.solve_triangular(
                self.cholesky.transpose(1, 2), noise, upper=True
            )
            return self.readout_mean() + correlated
        prior = torch.randn(n_replicas, n_features, n_outputs, generator=generator, dtype=dtype,
                            device=device)
        label_noise = torch.randn(n_replicas, n_samples, n_outputs, generator=generator,
                                  dtype=dtype, device=device)
        prior = prior.to(self.features.device) / math.sqrt(self.lambda1)
        label_noise = label_noise.to(self.features.device) * math.sqrt(self.temperature)
        residual = self.targets - self.features @ prior - label_noise
        correction = self.features.transpose(1, 2) @ self._solve_evidence(residual)
        return prior + correction / self.lambda1
