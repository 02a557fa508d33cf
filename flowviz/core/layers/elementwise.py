"""Elementwise layers: a learnable leaky ReLU."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowviz.core.layers.base import Handle, HandleValue, Layer, LayerInfo, register
from flowviz.core.settings import Setting


@register(
    LayerInfo(
        name="leaky_relu",
        title="Leaky ReLU",
        description="Each coordinate below zero is multiplied by a learned slope a > 0: piecewise-linear, with a kink on the axes.",
        reference="Dinh et al. (2019), A RAD approach to deep mixture models, arXiv:1903.07714",
        tex_map=r"x_i = z_i \text{ if } z_i \ge 0 \text{ else } a\, z_i",
        tex_log_det=r"\textstyle\sum_i [z_i < 0] \ln a",
        settings=(Setting("slope", "float", 0.5, low=0.01, high=10.0, log_scale=True, doc="initial slope below zero"),),
        handles=(Handle("slope", "number", "slope a below zero", low=0.01, high=10.0, log_scale=True,
                        doc="< 1 squeezes the negative half-axes towards 0, > 1 stretches them"),),
    )
)
class LeakyReLU(Layer):
    def __init__(self, slope: float = 0.5):
        super().__init__()
        self.log_slope = nn.Parameter(torch.tensor(math.log(slope)))

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        return {"slope": math.exp(float(self.log_slope.detach()))}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        self.log_slope.fill_(math.log(float(values["slope"])))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        negative = z < 0
        x = torch.where(negative, z * self.log_slope.exp(), z)
        return x, (negative * self.log_slope).sum(-1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        negative = x < 0
        z = torch.where(negative, x * (-self.log_slope).exp(), x)
        return z, -(negative * self.log_slope).sum(-1)
