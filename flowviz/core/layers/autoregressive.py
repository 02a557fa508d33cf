"""Affine autoregressive layers: MAF and IAF.

Both use one MADE network; they differ in which side it reads. MAF conditions on the data side,
so density evaluation (inverse) is one pass and sampling (forward) needs one pass per dimension.
IAF conditions on the base side, so sampling is one pass and density evaluation is sequential.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowviz.core.layers.base import Layer, LayerInfo, register
from flowviz.core.layers.coupling import SCALE_BOUND
from flowviz.core.layers.nets import HIDDEN_SETTINGS, MADE

DIMS = 2


class Autoregressive(Layer):
    def __init__(self, hidden: int = 64, depth: int = 2, activation: str = "relu"):
        super().__init__()
        self.made = MADE(DIMS, 2, hidden, depth, activation)

    def _shift_scale(self, conditioner: Tensor) -> tuple[Tensor, Tensor]:
        params = self.made(conditioner)
        return params[..., 0], SCALE_BOUND * (params[..., 1] / SCALE_BOUND).tanh()

    def _one_pass(self, source: Tensor, conditioner: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_scale(conditioner)
        if inverse:
            return (source - shift) * (-log_scale).exp(), -log_scale.sum(-1)
        return source * log_scale.exp() + shift, log_scale.sum(-1)

    def _sequential(self, source: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Solve for the side the network reads, one dimension per pass."""
        out = torch.zeros_like(source)
        for i in range(DIMS):
            shift, log_scale = self._shift_scale(out)
            if inverse:
                value = (source[:, i] - shift[:, i]) * (-log_scale[:, i]).exp()
            else:
                value = source[:, i] * log_scale[:, i].exp() + shift[:, i]
            out = torch.cat([out[:, :i], value[:, None], out[:, i + 1 :]], dim=1)
        ladj = log_scale.sum(-1)
        return out, -ladj if inverse else ladj


@register(
    LayerInfo(
        name="maf",
        title="MAF (masked autoregressive)",
        description="z_i scaled and shifted by a MADE of the data-side coordinates before it: density in one pass, sampling sequential.",
        reference="Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow for Density Estimation, arXiv:1705.07057",
        tex_map=r"x_i = z_i\, e^{s_i(x_{<i})} + t_i(x_{<i})",
        tex_log_det=r"\textstyle\sum_i s_i(x_{<i})",
        settings=HIDDEN_SETTINGS,
        cheap_direction="inverse",
    )
)
class MAF(Autoregressive):
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._sequential(z, inverse=False)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, conditioner=x, inverse=True)


@register(
    LayerInfo(
        name="iaf",
        title="IAF (inverse autoregressive)",
        description="z_i scaled and shifted by a MADE of the base-side coordinates before it: sampling in one pass, density sequential.",
        reference="Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), Improved Variational Inference with Inverse Autoregressive Flow, arXiv:1606.04934",
        tex_map=r"x_i = z_i\, e^{s_i(z_{<i})} + t_i(z_{<i})",
        tex_log_det=r"\textstyle\sum_i s_i(z_{<i})",
        settings=HIDDEN_SETTINGS,
        cheap_direction="forward",
    )
)
class IAF(Autoregressive):
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(z, conditioner=z, inverse=False)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._sequential(x, inverse=True)
