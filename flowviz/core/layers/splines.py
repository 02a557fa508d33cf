"""Monotonic rational-quadratic splines with identity tails.

Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows", arXiv:1906.04032.
On [-bound, bound] the map is a piecewise rational-quadratic with `bins` knots; outside it is the
identity, and the boundary derivatives are 1 so the map is C1 everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(_ONE) + MIN_DERIVATIVE == 1: boundary derivatives match the identity tails.
_ONE = math.log(math.expm1(1 - MIN_DERIVATIVE))


def _knots(unnormalized: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    knots = 2 * bound * knots - bound
    knots = torch.cat([torch.full_like(knots[..., :1], -bound), knots[..., 1:-1], torch.full_like(knots[..., :1], bound)], -1)
    return knots, knots[..., 1:] - knots[..., :-1]


def rational_quadratic_spline(
    x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise to `x` of shape (N,).

    `widths`, `heights`: (N, bins) unnormalised; `derivatives`: (N, bins - 1) unnormalised inner
    knot derivatives. Returns the output and ln|dy/dx| of the direction applied.
    """
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)  # keeps the unused branch of `where` finite, gradients included
    cum_w, w = _knots(widths, bound, MIN_BIN_WIDTH)
    cum_h, h = _knots(heights, bound, MIN_BIN_HEIGHT)
    # Shifted by _ONE so zero parameters give derivative 1 everywhere: the identity map.
    d = MIN_DERIVATIVE + F.softplus(F.pad(derivatives, (1, 1)) + _ONE)

    edges = cum_h if inverse else cum_w
    k = (torch.searchsorted(edges[..., 1:-1].contiguous(), xc[..., None]).squeeze(-1)).clamp(0, w.shape[-1] - 1)

    def pick(t: Tensor) -> Tensor:
        return t.gather(-1, k[..., None]).squeeze(-1)

    x_k, w_k, y_k, h_k = pick(cum_w), pick(w), pick(cum_h), pick(h)
    d_k, d_k1 = pick(d[..., :-1]), pick(d[..., 1:])
    s = h_k / w_k
    if inverse:
        dy = xc - y_k
        a = h_k * (s - d_k) + dy * (d_k1 + d_k - 2 * s)
        b = h_k * d_k - dy * (d_k1 + d_k - 2 * s)
        c = -s * dy
        theta = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))
        out = x_k + theta * w_k
    else:
        theta = (xc - x_k) / w_k
        t1 = theta * (1 - theta)
        out = y_k + h_k * (s * theta**2 + d_k * t1) / (s + (d_k1 + d_k - 2 * s) * t1)
    t1 = theta * (1 - theta)
    denominator = s + (d_k1 + d_k - 2 * s) * t1
    numerator = s**2 * (d_k1 * theta**2 + 2 * s * t1 + d_k * (1 - theta) ** 2)
    ladj = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        ladj = -ladj
    zero = torch.zeros_like(ladj)
    return torch.where(inside, out, x), torch.where(inside, ladj, zero)
