"""Hand mode's handles: every layer that declares them reads and writes them, and whatever a hand
sets, the layer stays invertible with an exact log-det."""

from __future__ import annotations

import math
import random

import pytest
import torch

from flowviz.core.bases import BASES, make_base
from flowviz.core.layers import LAYERS, make_layer
from flowviz.core.layers.base import HandleError
from tests.helpers import jacobians, plane_points

WITH_HANDLES = sorted(name for name, entry in LAYERS.items() if entry.info.handles)


def test_the_classic_layers_have_handles():
    assert {"planar", "radial", "rotation", "actnorm", "leaky_relu", "lu_linear"} <= set(WITH_HANDLES)


@pytest.mark.parametrize("name", WITH_HANDLES)
def test_declared_handles_are_what_the_layer_reads_and_a_round_trip_changes_nothing(name):
    layer = make_layer(name).double().eval()  # (eval: ActNorm does not set itself from the first batch)
    declared = {handle.name: handle for handle in layer.info.handles}
    values = layer.handles()
    assert set(values) == set(declared)
    for handle in declared.values():
        if handle.kind == "number":
            assert isinstance(values[handle.name], float) and handle.low <= values[handle.name] <= handle.high
        else:
            assert len(values[handle.name]) == 2
        if handle.kind == "vector":
            assert declared[handle.origin].kind == "point"
    z = plane_points(0)
    before = layer(z)
    layer.move(values)
    after = layer(z)
    torch.testing.assert_close(after[0], before[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(after[1], before[1], atol=1e-6, rtol=0)


def _random_values(layer, rng: random.Random) -> dict:
    out = {}
    for handle in layer.info.handles:
        if handle.kind == "number":
            low, high = max(handle.low, -6.0), min(handle.high, 6.0)
            out[handle.name] = math.exp(rng.uniform(math.log(low), math.log(high))) if handle.log_scale \
                else rng.uniform(low, high)
        else:
            out[handle.name] = (rng.uniform(-3, 3), rng.uniform(-3, 3))
    return out


@pytest.mark.parametrize("name", WITH_HANDLES)
@pytest.mark.parametrize("seed", range(6))
def test_whatever_a_hand_sets_the_layer_stays_invertible_with_the_exact_log_det(name, seed):
    torch.manual_seed(seed)
    layer = make_layer(name).double()
    try:
        layer.move(_random_values(layer, random.Random(seed)))
    except HandleError:  # (a random W near singular): refused, and the layer is as it was
        return
    layer.eval()
    z = plane_points(seed)
    x, ladj = layer(z)
    back, inverse_ladj = layer.inverse(x)
    torch.testing.assert_close(back, z, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ladj, torch.linalg.det(jacobians(layer, z)).abs().log(), atol=1e-6, rtol=1e-6)


def test_a_planar_line_goes_through_its_anchor_and_u_is_what_was_set():
    layer = make_layer("planar").double()
    values = layer.move({"anchor": (1.0, 0.5), "w": (2.0, 0.0), "u": (0.3, 1.0)})
    w, b = layer.w.detach(), float(layer.b.detach())
    assert float(w @ torch.tensor([1.0, 0.5], dtype=torch.float64)) + b == pytest.approx(0, abs=1e-9)
    assert values["anchor"] == pytest.approx((1.0, 0.0))  # the line x = 1: its point nearest the origin
    assert layer.u_hat().detach().tolist() == pytest.approx([0.3, 1.0], abs=1e-9)
    # A push that would fold the plane over (wᵀu ≤ -1) is kept just short of it.
    values = layer.move({"u": (-3.0, 1.0)})
    assert float(layer.w @ layer.u_hat()) == pytest.approx(-0.95, abs=1e-6) and values["u"][1] == pytest.approx(1.0)


def test_a_radial_layer_moves_its_centre_and_keeps_beta_above_minus_alpha():
    layer = make_layer("radial").double()
    values = layer.move({"center": (2.0, -1.0), "alpha": 0.5, "beta": -3.0})
    assert values["center"] == pytest.approx((2.0, -1.0))
    assert values["alpha"] == pytest.approx(0.5) and values["beta"] == pytest.approx(-0.495)


def test_a_linear_layer_takes_any_invertible_matrix_and_refuses_a_singular_one():
    layer = make_layer("lu_linear").double()
    values = layer.move({"w11": 0.0, "w12": 2.0, "w21": -1.0, "w22": 0.5, "bias": (1.0, 2.0)})
    assert layer.weight().detach().flatten().tolist() == pytest.approx([0.0, 2.0, -1.0, 0.5], abs=1e-9)
    before = layer.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    with pytest.raises(HandleError, match="singular"):
        layer.move({"w11": 1.0, "w12": 2.0, "w21": 0.5, "w22": 1.0})
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    assert values["bias"] == pytest.approx((1.0, 2.0))


def test_numbers_are_clipped_to_their_range_and_unknown_handles_are_named():
    layer = make_layer("leaky_relu")
    assert layer.move({"slope": 1e6})["slope"] == pytest.approx(10.0)
    with pytest.raises(HandleError, match="no handle 'tilt'"):
        layer.move({"tilt": 1.0})
    with pytest.raises(HandleError, match="finite"):
        layer.move({"slope": math.nan})


def test_actnorm_set_by_hand_is_not_overwritten_by_the_first_training_batch():
    layer = make_layer("actnorm")
    layer.move({"scale_x": 2.0, "shift": (1.0, 0.0)})
    layer.train()
    layer(torch.randn(64, 2) * 5 + 3)
    assert layer.handles()["scale_x"] == pytest.approx(2.0) and layer.handles()["shift"] == pytest.approx((1.0, 0.0))


BASES_WITH_HANDLES = sorted(name for name, entry in BASES.items() if entry.info.handles)


@pytest.mark.parametrize("name", BASES_WITH_HANDLES)
def test_a_base_moved_by_hand_is_where_the_hand_put_it_and_still_a_density(name):
    base = make_base(name, {}, learnable=True).double()
    values = base.move({"loc": (1.5, -0.5), "scale_x": 2.0, "scale_y": 0.5})
    assert values["loc"] == pytest.approx((1.5, -0.5)) and values["scale_x"] == pytest.approx(2.0)
    z = base.sample(20_000, torch.Generator().manual_seed(0))
    assert z.median(0).values.tolist() == pytest.approx([1.5, -0.5], abs=0.06)  # every family is centred on loc
    # Still normalised: the density integrates to one over a box that holds it.
    n, lo_x, hi_x, lo_y, hi_y = 600, 1.5 - 30, 1.5 + 30, -0.5 - 8, -0.5 + 8
    xs, ys = torch.linspace(lo_x, hi_x, n, dtype=torch.float64), torch.linspace(lo_y, hi_y, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    mass = base.log_prob(torch.stack([gx.flatten(), gy.flatten()], -1)).exp().sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert float(mass) == pytest.approx(1.0, abs=0.03)
