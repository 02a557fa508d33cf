"""Linear and volume-preserving layers: LU-parametrised linear map, coordinate swap, rotation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowviz.core.layers.base import Layer, LayerInfo, register
from flowviz.core.settings import Setting


def rotation_matrix(angle: Tensor) -> Tensor:
    c, s = angle.cos(), angle.sin()
    return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])


def _apply_2x2(points: Tensor, matrix: Tensor) -> Tensor:
    return points @ matrix.T


def _inverse_2x2(m: Tensor) -> Tensor:
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    return torch.stack([torch.stack([m[1, 1], -m[0, 1]]), torch.stack([-m[1, 0], m[0, 0]])]) / det


@register(
    LayerInfo(
        name="lu_linear",
        title="Invertible linear (LU)",
        description="x = W z + b with W = P L (U + diag s): any invertible linear map, ln|det J| = Σ ln|s|.",
        reference="Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions, arXiv:1807.03039",
        tex_map=r"x = P L (U + \operatorname{diag} s)\, z + b",
        tex_log_det=r"\textstyle\sum_i \ln|s_i|",
    )
)
class LULinear(Layer):
    def __init__(self):
        super().__init__()
        # Start from a random rotation, as Glow does, factorised once: W0 = P L U.
        angle = torch.rand(()) * 2 * math.pi
        w0 = rotation_matrix(angle)
        p, lower, upper = torch.linalg.lu(w0)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", p)
        self.register_buffer("sign", diagonal.sign())
        self.lower = nn.Parameter(lower[1, 0].clone())
        self.upper = nn.Parameter(upper[0, 1].clone())
        self.log_scale = nn.Parameter(diagonal.abs().log())
        self.bias = nn.Parameter(torch.zeros(2))

    def weight(self) -> Tensor:
        one, zero = torch.ones_like(self.lower), torch.zeros_like(self.lower)
        lower = torch.stack([torch.stack([one, zero]), torch.stack([self.lower, one])])
        s = self.sign * self.log_scale.exp()
        upper = torch.stack([torch.stack([s[0], self.upper]), torch.stack([zero, s[1]])])
        return self.permutation @ lower @ upper

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(z, self.weight()) + self.bias, self.log_scale.sum().expand(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(x - self.bias, _inverse_2x2(self.weight())), -self.log_scale.sum().expand(x.shape[0])


@register(
    LayerInfo(
        name="swap",
        title="Swap coordinates",
        description="Exchanges z1 and z2 (the 2-D permutation), so the next coupling layer changes the other coordinate.",
        reference="Dinh, Krueger & Bengio (2015), NICE, arXiv:1410.8516",
        tex_map=r"(x_1, x_2) = (z_2, z_1)",
        tex_log_det=r"0",
    )
)
class Swap(Layer):
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.flip(-1), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flip(-1), x.new_zeros(x.shape[0])


@register(
    LayerInfo(
        name="rotation",
        title="Learnable rotation",
        description="Rotates the plane by a learned angle; volume-preserving (ln|det J| = 0).",
        reference="Tomczak & Welling (2016), Improving Variational Auto-Encoders using Householder Flow, arXiv:1611.09630",
        tex_map=r"x = R_\phi\, z",
        tex_log_det=r"0",
        settings=(Setting("angle", "float", 45.0, low=-180.0, high=180.0, doc="initial angle in degrees"),),
    )
)
class Rotation(Layer):
    def __init__(self, angle: float = 45.0):
        super().__init__()
        self.angle = nn.Parameter(torch.tensor(math.radians(angle)))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(z, rotation_matrix(self.angle)), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(x, rotation_matrix(self.angle).T), x.new_zeros(x.shape[0])
