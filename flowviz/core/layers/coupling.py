"""Coupling layers: one coordinate passes through and conditions an invertible map of the other.

In two dimensions a coupling layer transforms z2 given z1 (or z1 given z2); stacking layers that
alternate `transformed` lets every coordinate depend on every other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowviz.core.layers.base import Layer, LayerInfo, register
from flowviz.core.layers.nets import HIDDEN_SETTINGS, mlp
from flowviz.core.layers.splines import rational_quadratic_spline
from flowviz.core.limits import LIMITS
from flowviz.core.settings import Setting

TRANSFORMED = Setting(
    "transformed", "choice", "z2", choices=("z2", "z1"), doc="the coordinate this layer changes; the other conditions it"
)
SCALE_BOUND = 5.0  # |ln scale| of affine coupling stays below this (a soft clamp against overflow)


class Coupling(Layer):
    """Shared plumbing: split, condition, transform one coordinate, join."""

    params_per_point: int

    def __init__(self, transformed: str = "z2", hidden: int = 64, depth: int = 2, activation: str = "relu"):
        super().__init__()
        self.changed = 1 if transformed == "z2" else 0
        self.net = mlp(1, self.params_per_point, hidden, depth, activation)

    def _transform(self, value: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, points: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept = points[:, 1 - self.changed]
        changed, ladj = self._transform(points[:, self.changed], self.net(kept[:, None]), inverse)
        out = [kept, changed] if self.changed == 1 else [changed, kept]
        return torch.stack(out, dim=1), ladj

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(z, inverse=False)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, inverse=True)

    def inverse_on_grid(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        # The conditioner sees only the kept coordinate, which takes len(xs) (or len(ys)) values on
        # the grid: run it on those and repeat, instead of on every grid point.
        if self.changed == 1:  # y changes given x; x varies fastest
            kept, changed = xs.repeat(len(ys)), ys.repeat_interleave(len(xs))
            params = self.net(xs[:, None]).repeat(len(ys), 1)
        else:
            kept, changed = ys.repeat_interleave(len(xs)), xs.repeat(len(ys))
            params = self.net(ys[:, None]).repeat_interleave(len(xs), 0)
        out, ladj = self._transform(changed, params, inverse=True)
        return torch.stack([kept, out] if self.changed == 1 else [out, kept], dim=1), ladj


@register(
    LayerInfo(
        name="additive_coupling",
        title="NICE additive coupling",
        description="Shifts one coordinate by a network of the other; volume-preserving (ln|det J| = 0).",
        reference="Dinh, Krueger & Bengio (2015), NICE: Non-linear Independent Components Estimation, arXiv:1410.8516",
        tex_map=r"x_b = z_b + t(z_a)",
        tex_log_det=r"0",
        settings=(TRANSFORMED, *HIDDEN_SETTINGS),
    )
)
class AdditiveCoupling(Coupling):
    params_per_point = 1

    def _transform(self, value: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = params[:, 0]
        out = value - shift if inverse else value + shift
        return out, value.new_zeros(value.shape)


@register(
    LayerInfo(
        name="affine_coupling",
        title="RealNVP affine coupling",
        description="Scales and shifts one coordinate by networks of the other.",
        reference="Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP, arXiv:1605.08803",
        tex_map=r"x_b = z_b\, e^{s(z_a)} + t(z_a)",
        tex_log_det=r"s(z_a)",
        settings=(TRANSFORMED, *HIDDEN_SETTINGS),
    )
)
class AffineCoupling(Coupling):
    params_per_point = 2

    def _transform(self, value: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        log_scale = SCALE_BOUND * (params[:, 0] / SCALE_BOUND).tanh()
        shift = params[:, 1]
        if inverse:
            return (value - shift) * (-log_scale).exp(), -log_scale
        return value * log_scale.exp() + shift, log_scale


@register(
    LayerInfo(
        name="spline_coupling",
        title="Rational-quadratic spline coupling",
        description="Bends one coordinate through a monotonic spline whose knots a network of the other sets; "
                    "identity outside ±bound. The spline maps towards the base, as in the paper; sampling inverts it.",
        reference="Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows, arXiv:1906.04032",
        tex_map=r"x_b = \mathrm{RQS}^{-1}_{\theta(z_a)}(z_b)",
        tex_log_det=r"-\ln \mathrm{RQS}'_{\theta(z_a)}(x_b)",
        settings=(
            TRANSFORMED,
            Setting("bins", "int", 8, low=2, high=LIMITS.max_bins, doc="spline bins"),
            Setting("bound", "float", 5.0, low=0.5, high=50.0, doc="the spline acts on [-bound, bound]"),
            *HIDDEN_SETTINGS,
        ),
    )
)
class SplineCoupling(Coupling):
    def __init__(self, transformed: str = "z2", bins: int = 8, bound: float = 5.0, **net):
        self.bins, self.bound = bins, bound
        self.params_per_point = 3 * bins - 1
        super().__init__(transformed, **net)

    def _transform(self, value: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        # The spline itself runs on the density side (x -> z), which training by likelihood takes at
        # every step, and its inverse (a quadratic's root) samples, as in the paper, zuko and nflows.
        # The other way round fit worse: NSF-4 on 8gaussians after 1000 steps, mean KL over 12 seeds
        # 0.040 nats against 0.027 this way (nflows 0.033, zuko 0.029; README, Training).
        k = self.bins
        return rational_quadratic_spline(
            value, params[:, :k], params[:, k : 2 * k], params[:, 2 * k :], self.bound, inverse=not inverse
        )
