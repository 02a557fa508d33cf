"""Linear and volume-preserving layers: LU-parametrised linear map, coordinate swap, rotation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowviz.core.layers.base import Handle, HandleError, HandleValue, Layer, LayerInfo, as_pair, register
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
        handles=(
            *(Handle(f"w{i}{j}", "number", f"W{'₁₂'[i - 1]}{'₁₂'[j - 1]}", low=-4.0, high=4.0,
                     doc="an entry of W; |det W| must stay ≥ 0.05 (an invertible map)") for i in (1, 2) for j in (1, 2)),
            Handle("bias", "point", "the shift b", mark="b", doc="where the origin goes"),
        ),
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

    MIN_DET = 0.05  # a hand-set W closer to singular is refused: its inverse would blow up

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        w = self.weight().detach()
        return {"w11": float(w[0, 0]), "w12": float(w[0, 1]), "w21": float(w[1, 0]), "w22": float(w[1, 1]),
                "bias": as_pair(self.bias.detach())}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        w = torch.tensor([[values["w11"], values["w12"]], [values["w21"], values["w22"]]], dtype=torch.float64)
        det = float(torch.linalg.det(w))
        if abs(det) < self.MIN_DET:
            raise HandleError(f"W would be (nearly) singular: det W = {det:.3f}, and a linear flow needs |det W| ≥ "
                              f"{self.MIN_DET} to stay invertible. Move the entry less far.")
        p, lower, upper = torch.linalg.lu(w)  # W = P L U, L unit lower-triangular: the layer's own form
        diagonal = upper.diagonal()
        self.permutation.copy_(p)
        self.sign.copy_(diagonal.sign())
        self.lower.fill_(float(lower[1, 0]))
        self.upper.fill_(float(upper[0, 1]))
        self.log_scale.copy_(diagonal.abs().log())
        self.bias.copy_(torch.tensor(values["bias"]))

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
        handles=(Handle("angle", "number", "angle φ (degrees)", low=-180.0, high=180.0,
                        doc="turns the plane about the origin"),),
    )
)
class Rotation(Layer):
    def __init__(self, angle: float = 45.0):
        super().__init__()
        self.angle = nn.Parameter(torch.tensor(math.radians(angle)))

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        degrees = math.degrees(float(self.angle.detach()))
        return {"angle": (degrees + 180.0) % 360.0 - 180.0}  # a trained angle may have wound past ±180°

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        self.angle.fill_(math.radians(float(values["angle"])))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(z, rotation_matrix(self.angle)), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _apply_2x2(x, rotation_matrix(self.angle).T), x.new_zeros(x.shape[0])
