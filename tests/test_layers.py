"""Every registered layer, over random settings, parameters and points across the plane."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowviz.core.layers import LAYERS, IterativeInverse, make_layer
from flowviz.core.layers.residual import solve_tanh_equation
from tests.helpers import jacobians, plane_points, random_layer

NAMES = sorted(LAYERS)
seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.3, 3.0, 10.0, 40.0])


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds, scale=scales)
def test_inverse_undoes_forward_and_log_dets_cancel(name, seed, scale):
    layer = random_layer(name, seed)
    z = plane_points(seed, scale=scale)
    with torch.no_grad():
        x, ladj_forward = layer(z)
        z_back, ladj_inverse = layer.inverse(x)
        x_again, _ = layer(layer.inverse(z)[0])
    torch.testing.assert_close(z_back, z, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(x_again, z, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(ladj_forward + ladj_inverse, torch.zeros_like(ladj_forward), atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_on_a_grid_is_the_inverse_at_its_points(name):
    layer = random_layer(name, seed=7)
    xs, ys = torch.linspace(-5, 5, 9, dtype=torch.float64), torch.linspace(-3, 4, 7, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        expected = layer.inverse(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))
        got = layer.inverse_on_grid(xs, ys)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds, scale=scales)
def test_log_dets_equal_autograd_jacobian(name, seed, scale):
    layer = random_layer(name, seed)
    z = plane_points(seed, scale=scale)
    for direction in (layer.forward, layer.inverse):
        expected = torch.linalg.slogdet(jacobians(direction, z)).logabsdet
        torch.testing.assert_close(direction(z)[1], expected, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_layer_computes_what_the_cpu_does_and_its_log_det_is_the_jacobians(name):
    """bench/gpu_check.sh runs this on a GPU."""
    check_device_agrees_with_cpu(name, "cuda")


def check_device_agrees_with_cpu(name: str, device: str) -> None:
    """Each direction on `device` gives the CPU's points and log-dets, in float64 and float32, and its
    log-det is the autograd Jacobian's there too."""
    z = plane_points(5)
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        layer = random_layer(name, seed=5).to(dtype)
        there, points = copy.deepcopy(layer).to(device), z.to(dtype)
        for direction in ("forward", "inverse"):
            with torch.no_grad():
                expected = getattr(layer, direction)(points)
                got = getattr(there, direction)(points.to(device))
            for a, b in zip(got, expected):
                torch.testing.assert_close(a.cpu(), b, atol=tolerance, rtol=tolerance)
        if dtype == torch.float64:
            jacobian = torch.linalg.slogdet(jacobians(there.forward, points.to(device))).logabsdet
            torch.testing.assert_close(there(points.to(device))[1], jacobian, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds)
def test_every_parameter_gets_a_gradient_in_both_directions(name, seed):
    layer = random_layer(name, seed)
    if not list(layer.parameters()):
        return  # e.g. swap: nothing to learn
    z = plane_points(seed)
    for direction in (layer.forward, layer.inverse):
        layer.zero_grad()
        out, ladj = direction(z)
        # Neither rotation- nor translation-invariant, so every parameter matters.
        weights = torch.tensor([0.3, -0.7], dtype=out.dtype)
        ((out * weights).sum() + 0.1 * (out**2 * weights.abs()).sum() + ladj.sum()).backward()
        for pname, p in layer.named_parameters():
            assert p.grad is not None, f"{name}.{pname} has no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} has a zero gradient"


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].info.iterative_inverse])
def test_numerical_inverse_gradient_matches_finite_differences(name):
    """The single Newton step gives the exact implicit gradient of the numerical inverse."""
    layer = random_layer(name, 7)
    x = plane_points(7, n=6)
    names = [n for n, _ in layer.named_parameters()]

    def inverse_with(*values):
        return torch.func.functional_call(_Inverse(layer), {f"layer.{n}": v for n, v in zip(names, values)}, (x,))

    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(inverse_with, values, atol=1e-5, rtol=1e-4)


class _Inverse(torch.nn.Module):
    """Exposes a layer's inverse as forward, for torch.func.functional_call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.inverse(x)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name):
    cls = LAYERS[name]
    info = cls.info
    assert info.name == name and info.title and info.description and info.reference
    assert info.iterative_inverse == issubclass(cls, IterativeInverse)
    assert info.cheap_direction in ("both", "forward", "inverse")
    make_layer(name, {s.name: s.default for s in info.settings})  # the declared defaults build


def test_autoregressive_layers_declare_their_cheap_direction():
    assert LAYERS["maf"].info.cheap_direction == "inverse"
    assert LAYERS["iaf"].info.cheap_direction == "forward"


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].info.iterative_inverse])
@given(seed=seeds, scale=scales)
def test_numerical_inverse_is_accurate_in_float32(name, seed, scale):
    layer = random_layer(name, seed, dtype=torch.float32, noise=1.0)
    z = plane_points(seed, scale=scale, dtype=torch.float32)
    with torch.no_grad():
        back = layer.inverse(layer(z)[0])[0]
    assert ((back - z).abs() / z.abs().clamp_min(1)).max() < 1e-5


def test_iresnet_inverts_near_the_lipschitz_limit():
    torch.manual_seed(0)
    layer = make_layer("iresnet", {"lipschitz": 0.99, "hidden": 32, "depth": 2}).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(5)  # push every weight to its spectral-norm bound
        z = torch.randn(512, 2) * 3
        back = layer.inverse(layer(z)[0])[0]
    assert (back - z).abs().max() < 1e-5


@given(seed=seeds)
def test_iresnet_residual_is_a_contraction(seed):
    layer = random_layer("iresnet", seed, noise=3.0)
    z = plane_points(seed)
    jac_g = jacobians(layer.forward, z) - torch.eye(2, dtype=z.dtype)
    assert torch.linalg.matrix_norm(jac_g, ord=2).max() < layer.lipschitz + 1e-9


def test_tanh_equation_solver_handles_the_invertibility_edge():
    t = torch.linspace(-5, 5, 101, dtype=torch.float64)
    c, k = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)  # c k = -1: flat at 0
    v = solve_tanh_equation(t, c, k, torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(v + c * torch.tanh(k * v), t, atol=1e-9, rtol=0)


@pytest.mark.parametrize("ck", [-1.0, -1 + 1e-7, -0.5, 0.0, 2.0, 40.0, 400.0])
@pytest.mark.parametrize("per_point_d", [False, True])
def test_tanh_equation_solver_settles_every_point(ck, per_point_d):
    """Steep (ck = 400: Newton alone cycles on tanh), flat (ck = -1: f' vanishes at the root) and
    k = 0, with Sylvester's per-point offset d: every root to 1e-9 of the residual, never NaN."""
    generator = torch.Generator().manual_seed(0)
    t = torch.randn(4096, generator=generator, dtype=torch.float64) * 20
    d = torch.randn(4096, generator=generator, dtype=torch.float64) if per_point_d else torch.tensor(0.3, dtype=torch.float64)
    for k in (torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)):
        c = torch.tensor(ck, dtype=torch.float64) / k if k != 0 else torch.tensor(ck, dtype=torch.float64)
        v = solve_tanh_equation(t, c, k, d)
        torch.testing.assert_close(v + c * torch.tanh(k * v + d), t, atol=1e-9 * (1 + float(t.abs().max())), rtol=0)


def test_spline_with_zero_parameters_is_the_identity():
    layer = make_layer("spline_coupling", {"bins": 5, "bound": 3.0})
    z = torch.randn(100, 2) * 3
    x, ladj = layer(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(ladj, torch.zeros(100), atol=1e-6, rtol=0)


def test_actnorm_standardises_its_first_training_batch():
    layer = make_layer("actnorm").train()
    x = torch.randn(1000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    z, _ = layer.inverse(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=1e-4, rtol=0)
    before = layer.shift.detach().clone()
    layer.inverse(x * 5)  # initialised once only
    torch.testing.assert_close(layer.shift, before)


def test_batchnorm_tracks_running_statistics_and_uses_them_in_eval():
    layer = make_layer("batchnorm", {"momentum": 1.0}).train()
    x = torch.randn(4000, 2) * 2 + 3
    z_train, ladj_train = layer.inverse(x)
    torch.testing.assert_close(z_train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    layer.eval()
    z_eval, ladj_eval = layer.inverse(x)  # running stats == this batch's, with momentum 1
    torch.testing.assert_close(z_eval, z_train, atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj_eval, ladj_train, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "batchnorm"])
def test_train_and_eval_modes_agree(name):
    """Only BatchNorm uses batch statistics; every other layer is the same map in both modes."""
    layer = random_layer(name, 3)
    z = plane_points(3)
    with torch.no_grad():
        eval_out = [t.clone() for t in (*layer(z), *layer.inverse(z))]
        layer.train()
        train_out = [*layer(z), *layer.inverse(z)]
    for a, b in zip(eval_out, train_out):
        torch.testing.assert_close(a, b)
