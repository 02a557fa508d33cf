"""The continuous flow (`cnf`) beyond the registry's checks every layer passes (round trip, both
log-dets against autograd, gradients, mass 1): its numerical direction, its invertibility bound,
its time slices, and the gap between the exact log-det and the integrated trace."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowviz.core.layers import make_layer
from flowviz.core.layers.continuous import step_bound
from tests.helpers import jacobians, plane_points, random_layer

seeds = st.integers(0, 2**31 - 1)


def field_with_speed(solver: str, steps: int, speed: float, seed: int = 0) -> torch.nn.Module:
    """A cnf whose v has the same weights, and Lip(v) bound `speed`, for any number of steps."""
    a = speed / steps
    contraction = a if solver == "euler" else a + a**2 / 2 + a**3 / 6 + a**4 / 24
    torch.manual_seed(seed)
    layer = make_layer("cnf", {"steps": steps, "solver": solver, "hidden": 16, "depth": 2,
                               "contraction": contraction}).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    return layer.eval()


@given(seed=seeds, scale=st.sampled_from([0.3, 3.0, 40.0]))
def test_the_solved_direction_is_accurate_in_float32(seed, scale):
    layer = random_layer("cnf", seed, dtype=torch.float32, noise=1.0)
    x = plane_points(seed, scale=scale, dtype=torch.float32)
    with torch.no_grad():
        back = layer(layer.inverse(x)[0])[0]
    assert ((back - x).abs() / x.abs().clamp_min(1)).max() < 1e-5


def test_the_solved_direction_has_the_exact_implicit_gradient():
    """Sampling solves each step by Newton; one Newton step from the root carries the gradient."""
    layer = random_layer("cnf", 7)
    z = plane_points(7, n=6)
    names = [n for n, _ in layer.named_parameters()]

    def forward_with(*values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (z,))

    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(forward_with, values, atol=1e-5, rtol=1e-4)


@settings(max_examples=20)
@given(seed=seeds)
def test_every_step_is_a_residual_map_with_a_contraction_for_its_residual(seed):
    """The bound that makes every step invertible, at its worst: weights far past their spectral-norm
    bound, points far out. One time slice per step is one explicit step, data side to base side."""
    layer = random_layer("cnf", seed, noise=5.0)
    x = plane_points(seed, scale=10.0)
    identity = torch.eye(2, dtype=x.dtype)
    for one_step in layer.unfold(layer.steps):
        residual = jacobians(one_step.inverse, x) - identity
        assert torch.linalg.matrix_norm(residual, ord=2).max() <= layer.contraction + 1e-9


@pytest.mark.parametrize("solver, order, speed, coarsest", [("euler", 1, 3.0, 8), ("rk4", 4, 2.5, 4)])
def test_the_integrated_trace_approaches_the_exact_log_det_at_the_solvers_order(solver, order, speed, coarsest):
    """Σ ln det J per step is exact for the solved map; ∫ tr ∂v/∂x dt by the solver's quadrature is
    the continuous estimate. Their gap falls like h^order as the steps double (same field)."""
    z = plane_points(1, n=8)
    gaps = []
    for steps in (coarsest, 2 * coarsest, 4 * coarsest):
        layer = field_with_speed(solver, steps, speed)
        walked = [layer.walk(point[None]) for point in z]
        exact = torch.tensor([sum(s.log_det for s in w) for w in walked], dtype=torch.float64)
        estimate = torch.tensor([sum(s.trace for s in w) for w in walked], dtype=torch.float64)
        torch.testing.assert_close(exact, layer(z)[1], atol=1e-9, rtol=0)  # the walk is the layer
        gaps.append(float((exact - estimate).abs().max()))
    assert gaps[0] > 1e-7  # there is a gap to show
    for coarse, fine in itertools.pairwise(gaps):
        assert coarse / fine > 2 ** order * 0.7, gaps


def test_time_slices_compose_to_the_whole_layer():
    torch.manual_seed(3)
    layer = make_layer("cnf", {"steps": 8, "hidden": 8}).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    slices = layer.unfold(4)
    assert [s.info.title for s in slices] == [f"Continuous flow, t = {t}" for t in ("¼", "½", "¾", "1")]
    assert [(s.t0, s.t1) for s in slices] == [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]
    z = plane_points(3)
    with torch.no_grad():
        x, total = z, torch.zeros(len(z), dtype=z.dtype)
        for part in slices:
            x, ladj = part(x)
            total = total + ladj
        whole_x, whole_ladj = layer(z)
    torch.testing.assert_close(x, whole_x, atol=1e-10, rtol=0)
    torch.testing.assert_close(total, whole_ladj, atol=1e-10, rtol=0)
    assert len(layer.unfold(20)) == 8  # never more slices than steps
    paths = layer.paths(z)
    assert paths.shape == (9, len(z), 2)
    torch.testing.assert_close(paths[-1], whole_x, atol=1e-10, rtol=0)


def test_the_rk4_bound_is_the_stage_chain():
    for contraction in (0.1, 0.5, 0.9):
        a = step_bound(contraction, "rk4")
        assert abs(a + a**2 / 2 + a**3 / 6 + a**4 / 24 - contraction) < 1e-12
    assert step_bound(0.3, "euler") == 0.3


def test_a_solve_cut_short_still_reports_the_log_det_of_the_point_it_returns(monkeypatch):
    """With one Newton iteration allowed, the sampled point is not the root yet; its log-det must
    still be that point's own, not the starting guess's."""
    from flowviz.core.layers import continuous

    monkeypatch.setattr(continuous, "MAX_NEWTON", 1)
    layer = random_layer("cnf", 5, noise=1.0)
    z = plane_points(5, scale=10.0)
    with torch.no_grad():
        x, ladj = layer(z)
    torch.testing.assert_close(ladj, -torch.linalg.slogdet(jacobians(layer.inverse, x)).logabsdet, atol=1e-9, rtol=0)
