"""Effective sample sizes and ln Z: against a Gaussian pair where both are exact, and against
quadrature on the energies U1-U4."""

from __future__ import annotations

import math

import pytest
import torch

from flowviz.core.diagnostics import forward_ess, importance
from flowviz.core.targets import TARGETS

N = 200_000


def log_normal(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return -(x**2).sum(-1) / (2 * sigma**2) - math.log(2 * math.pi * sigma**2)


@pytest.mark.parametrize("sigma", [0.6, 0.8, 1.2])
def test_a_gaussian_target_from_a_gaussian_q_where_ess_and_ln_z_are_exact(sigma):
    """p̃ = 3 N(0, σ²I), q = N(0, I): ln Z = ln 3, and ESS = 1 / E_q[(p/q)²] = (σ √(2 - σ²))² in 2-D."""
    generator = torch.Generator().manual_seed(0)
    from_q = torch.randn(N, 2, generator=generator, dtype=torch.float64)
    fit = importance(math.log(3) + log_normal(from_q, sigma) - log_normal(from_q, 1.0))
    exact_ess = (sigma * math.sqrt(2 - sigma**2)) ** 2
    assert fit.ess == pytest.approx(exact_ess, rel=0.02)
    assert abs(fit.log_z - math.log(3)) < 4 * fit.log_z_se + 1e-9
    assert fit.log_z_se == pytest.approx(math.sqrt(1 / (N * exact_ess) - 1 / N), rel=0.05)
    from_p = torch.randn(N, 2, generator=generator, dtype=torch.float64) * sigma
    assert forward_ess(log_normal(from_p, sigma) - log_normal(from_p, 1.0)) == pytest.approx(exact_ess, rel=0.03)


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_ess_and_ln_z_of_the_energies_match_quadrature(name):
    """q = N(0, 2²I) against exp(-U): ESS by quadrature is (∫p̃)² / ∫p̃²/q on a fine grid; ln Z is the
    tabulated quadrature (tests/test_densities checks it)."""
    target = TARGETS[name]()
    side = torch.linspace(-8, 8, 801, dtype=torch.float64)
    gy, gx = torch.meshgrid(side, side, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    cell = float(side[1] - side[0]) ** 2
    log_p_tilde, log_q = -target.energy(grid).double(), log_normal(grid, 2.0)
    log_z = float(torch.logsumexp(log_p_tilde, 0)) + math.log(cell)
    assert log_z == pytest.approx(target.log_z, abs=2e-3)
    exact_ess = math.exp(2 * log_z - (float(torch.logsumexp(2 * log_p_tilde - log_q, 0)) + math.log(cell)))
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    fit = importance(-target.energy(x).double() - log_normal(x, 2.0))
    assert fit.ess == pytest.approx(exact_ess, rel=0.05)
    assert abs(fit.log_z - target.log_z) < 4 * fit.log_z_se + 2e-3


def test_weights_outside_the_support_count_as_zero():
    fit = importance(torch.tensor([0.0, 0.0, -math.inf, float("nan")]))
    assert fit.ess == pytest.approx(0.5) and fit.log_z == pytest.approx(math.log(0.5))
