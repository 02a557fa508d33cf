"""The ledger: a point followed through the stack, with its change-of-variables sum checked."""

from __future__ import annotations

import math

import pytest
import torch

from flowviz.core.bases import BASES, make_base
from flowviz.core.flow import Flow
from flowviz.core.layers import LAYERS
from flowviz.core.ledger import follow

from .helpers import jacobians, random_layer


def _flow(names: list[str], base: str = "standard_normal", seed: int = 0) -> Flow:
    layers = [random_layer(name, seed + i, dtype=torch.float32, noise=0.3) for i, name in enumerate(names)]
    return Flow(make_base(base), layers).eval()


@pytest.mark.parametrize("name", list(LAYERS))
def test_sum_matches_direct_density_for_every_layer_type(name: str):
    flow = _flow([name, "affine_coupling", name])
    for depth in range(4):
        ledger = follow(flow, (0.7, -0.4), depth)
        assert ledger.rows[depth].point == pytest.approx((0.7, -0.4), abs=1e-6)  # z_k is the picked point
        assert ledger.log_q_sum == pytest.approx(ledger.log_q_direct, abs=1e-6)
        assert ledger.log_q_sum == pytest.approx(ledger.log_q0 - ledger.log_det_sum, abs=1e-12)


def test_rows_are_the_flow_trace_and_log_dets_match_autograd():
    flow = _flow(["planar", "spline_coupling", "maf", "rotation"])
    ledger = follow(flow, (1.2, 0.3), depth=0)
    exact = flow.double()
    z = torch.tensor([[1.2, 0.3]], dtype=torch.float64)
    points, _ = exact.trace(z)
    for row, expected in zip(ledger.rows, points):
        assert row.point == pytest.approx(tuple(expected[0].tolist()), abs=1e-12)
    for k, (_, layer) in enumerate(exact.active(), start=1):
        jac = jacobians(layer, points[k - 1])
        assert ledger.rows[k].log_det == pytest.approx(float(torch.linalg.slogdet(jac)[1][0]), abs=1e-9)
    # Running densities: ln q_k(z_k) from the sum equals the density of the first k layers, directly.
    for k in range(len(ledger.rows)):
        partial = Flow(exact.base, [layer for _, layer in exact.active()[:k]])
        z_k = torch.tensor([ledger.rows[k].point], dtype=torch.float64)
        assert ledger.rows[k].log_q == pytest.approx(float(partial.log_prob(z_k)[0].detach()), abs=1e-6)


def test_switched_off_layers_are_skipped_and_the_flow_is_left_alone():
    flow = _flow(["affine_coupling", "planar", "affine_coupling"])
    flow.enabled = [True, False, True]
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    ledger = follow(flow, (0.0, 1.0), depth=2)
    assert [row.position for row in ledger.rows] == [None, 0, 2]
    assert all(v.dtype == torch.float32 for v in flow.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())


@pytest.mark.parametrize("base", list(BASES))
def test_every_base(base: str):
    ledger = follow(_flow(["affine_coupling"], base=base), (0.2, 0.1), depth=1)
    assert math.isfinite(ledger.log_q0)
    assert ledger.agreement < 1e-6


def test_depth_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        follow(_flow(["swap"]), (0.0, 0.0), depth=2)
