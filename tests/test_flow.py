"""Whole flows: the change-of-variables identity, normalisation, and the grid views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowviz.core.bases import make_base
from flowviz.core.build import build_flow
from flowviz.core.flow import Flow
from flowviz.core.grid import GridRequest, evaluate_grid, output_log_prob
from flowviz.core.layers import LAYERS, make_layer
from flowviz.core.spec import ExperimentSpec
from tests.helpers import random_layer


def every_layer_flow(seed: int, base: str = "standard_normal", noise: float = 0.15) -> Flow:
    """One of each registered layer, gently randomised, in float64."""
    layers = [random_layer(name, seed + i, noise=noise) for i, name in enumerate(sorted(LAYERS))]
    return Flow(make_base(base, learnable=False).double(), layers).double().eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_log_q_along_the_forward_chain_equals_the_inverse_evaluation(seed):
    flow = every_layer_flow(seed)
    z0 = flow.base.sample(500, torch.Generator().manual_seed(seed)).double()
    with torch.no_grad():
        points, ladjs = flow.trace(z0)
        forward_log_q = flow.base.log_prob(z0) - torch.stack(ladjs).sum(0)
        inverse_log_q = flow.log_prob(points[-1])
    torch.testing.assert_close(inverse_log_q, forward_log_q, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("base, half, resolution", [("standard_normal", 24, 360), ("gaussian_mixture", 24, 360),
                                                     ("logistic", 40, 600)])
def test_flow_density_integrates_to_one_at_every_depth(base, half, resolution):
    """The random leaky-ReLU slopes and LU scalings spread the mass to about ±20 (±35 for the
    logistic base's exponential tails); the box is chosen to hold it, and the grid to resolve the
    narrowest ridge the stack folds the mass into. That ridge depends on the random stack: since the
    spline coupling inverts its spline to sample, seeds 3-5 fold mass into ridges a 360 grid misses
    (seed 3, standard normal base: 1.5% off at 360, 0.3% at 720); seed 6 is within 0.3% at every depth."""
    flow = every_layer_flow(6, base).float()
    views = evaluate_grid(flow, GridRequest(-half, half, -half, half, resolution=resolution))
    cell = (2 * half / (resolution - 1)) ** 2
    masses = np.exp(views.log_q.astype(np.float64)).sum((1, 2)) * cell
    np.testing.assert_allclose(masses, 1.0, atol=0.01)


@pytest.mark.parametrize("resolution", [24, 160])
def test_grid_views_agree_with_the_flow_at_every_depth(resolution):
    """At 160² every depth's copy of the grid is inverted in several chunks (4096 points a call
    through a layer with a network, 65,536 through one without): the chunks must add up."""
    flow = every_layer_flow(5).float()
    request = GridRequest(resolution=resolution)
    z0 = torch.randn(50, 2)
    views = evaluate_grid(flow, request, z0)
    depth = len(flow.layers)
    assert views.log_q.shape == (depth + 1, resolution, resolution) and views.samples.shape == (depth + 1, 50, 2)
    points = request.points()
    with torch.no_grad():
        for k in range(depth + 1):
            prefix = Flow(flow.base, list(flow.layers)[:k]).eval()
            expected = prefix.log_prob(points).view(resolution, resolution).numpy()
            np.testing.assert_allclose(views.log_q[k], expected, atol=2e-4, rtol=1e-4)
            np.testing.assert_allclose(views.samples[k], prefix(z0)[0].numpy(), atol=1e-4, rtol=1e-4)
    # the identity behind the log-det view, pixel by pixel
    z_base = [flow.base.log_prob(Flow(flow.base, list(flow.layers)[:k]).eval().inverse(points)[0]) for k in range(depth + 1)]
    for k in range(depth + 1):
        np.testing.assert_allclose(views.log_q[k], (z_base[k].view(resolution, resolution) - torch.from_numpy(views.cum_log_det[k])).detach().numpy(),
                                   atol=2e-4, rtol=1e-4)
    assert np.all(views.log_det[0] == 0)


def test_grid_layer_log_det_is_the_layers_own():
    flow = every_layer_flow(6).float()
    request = GridRequest(resolution=16)
    views = evaluate_grid(flow, request)
    points = request.points()
    with torch.no_grad():
        k = 4
        layer = flow.layers[k - 1]
        _, inverse_ladj = layer.inverse(points)
    np.testing.assert_allclose(views.log_det[k], -inverse_ladj.view(16, 16).numpy(), atol=1e-5)


def test_switched_off_layers_are_skipped_but_kept():
    spec = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}, {"type": "planar", "enabled": False}, {"type": "swap"}]})
    flow = build_flow(spec)
    assert len(flow.layers) == 3 and [i for i, _ in flow.active()] == [0, 2]
    views = evaluate_grid(flow, GridRequest(resolution=8))
    assert views.layers == [0, 2] and views.log_q.shape[0] == 3


def test_build_is_reproducible_from_the_seed():
    spec = ExperimentSpec.from_dict({"seed": 4, "layers": [{"type": "lu_linear"}, {"type": "planar"}, {"type": "affine_coupling"}]})
    a, b = build_flow(spec).state_dict(), build_flow(spec).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_flow(spec.replace(seed=5)).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("base", ["standard_normal", "uniform"])
def test_the_resampled_chain_stays_close_to_the_exact_one_and_is_exact_off_the_image(base):
    """Each depth read off the one before: every layer type, a smooth and a bounded base (whose
    ln q_0 is -inf outside its support, so those pixels must take the exact chain)."""
    flow = every_layer_flow(7, base).float()
    request = GridRequest(resolution=96)
    exact, live = evaluate_grid(flow, request), evaluate_grid(flow, request, exact=False)
    assert live.exact is False and exact.exact is True
    cell = (8 / 95) ** 2
    for k in range(len(flow.layers) + 1):
        q_exact, q_live = np.exp(exact.log_q[k].astype(np.float64)), np.exp(live.log_q[k].astype(np.float64))
        assert np.isfinite(exact.log_q[k]).sum() == np.isfinite(live.log_q[k]).sum()
        assert np.abs(q_exact - q_live).sum() * cell < 0.08, k  # under 4% of the mass misplaced, after 15 layers
        np.testing.assert_allclose(live.log_det[k], exact.log_det[k], atol=1e-4)  # one inversion: exact in both
    # A shift by 3 moves a third of the view box's preimages off the grid: those pixels take the
    # exact chain, and agree with it to float precision.
    shift = make_layer("actnorm").eval()
    with torch.no_grad():
        shift.shift.copy_(torch.tensor([3.0, 0.0]))
        shift.log_scale.zero_()
        shift.initialized.fill_(True)
    shifted = Flow(flow.base, [*flow.layers, shift]).eval()
    exact, live = evaluate_grid(shifted, request), evaluate_grid(shifted, request, exact=False)
    off = request.points()[:, 0].numpy().reshape(96, 96) - 3.0 < request.xmin
    np.testing.assert_allclose(live.log_q[-1][off], exact.log_q[-1][off], atol=1e-4, rtol=1e-6)  # float32 at ln q ~ -600


def test_the_model_view_is_the_exact_last_depth():
    flow = every_layer_flow(2).float()
    request = GridRequest(resolution=40)
    np.testing.assert_allclose(output_log_prob(flow, request), evaluate_grid(flow, request).log_q[-1], atol=1e-4)
