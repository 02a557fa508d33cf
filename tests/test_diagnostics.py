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


# -- the KL after each layer -------------------------------------------------------------------------
def _cut(flow, k: int):
    """The flow of the first k active layers, as a flow of its own (same modules)."""
    from flowviz.core.flow import Flow

    return Flow(flow.base, [layer for _, layer in flow.active()[:k]])


@pytest.mark.parametrize("preset", ["realnvp-moons", "planar-u1-k8", "spline-smiley"])
def test_the_kl_after_each_layer_is_that_of_the_flow_cut_there_and_ends_at_the_reported_kl(preset):
    from flowviz.core.presets import preset_path
    from flowviz.core.spec import ExperimentSpec
    from flowviz.core.training import Trainer

    spec = ExperimentSpec.load(preset_path(preset)).replace(training={"test_size": 512})
    trainer = Trainer(spec)
    for _ in range(30):
        trainer.step()
    by_depth = trainer.kl_by_depth()
    assert len(by_depth) == len(trainer.flow.active()) + 1
    assert by_depth[-1] == pytest.approx(trainer.evaluate().kl, rel=1e-6)  # (float32 sums, in another order)
    reverse = spec.training.objective == "reverse_kl"
    with torch.no_grad(), trainer.flow.evaluating():
        for k in (0, len(by_depth) // 2):
            cut = _cut(trainer.flow, k)
            if reverse:  # the same q-samples: the base's, pushed through the first k layers
                z = trainer.flow.base.sample(512, torch.Generator().manual_seed(spec.seed + 104_729))
                x, log_q = cut.forward(z)[0], trainer.flow.base.log_prob(z) - cut.forward(z)[1]
                expected = float((log_q - trainer.target.log_prob(x)).mean())
            else:
                x = trainer.test_points
                expected = float((trainer.target.log_prob(x) - cut.log_prob(x)).mean())
            assert by_depth[k] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_no_kl_by_depth_where_the_target_density_is_unknown():
    from flowviz.core.spec import ExperimentSpec
    from flowviz.core.training import Trainer

    spec = ExperimentSpec.from_dict({"target": {"name": "pinwheel"}, "layers": [{"type": "affine_coupling"}]})
    assert Trainer(spec).kl_by_depth() is None
