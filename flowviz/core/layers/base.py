"""The layer interface and the layer registry.

Every layer is an invertible map of the plane. `forward` goes from the base towards the data
(z_{k-1} -> z_k), `inverse` from the data towards the base; each returns the points and the
per-point ln|det J| of *that* direction, so forward and inverse log-dets at matching points sum
to zero.

Layers without a closed-form inverse subclass `IterativeInverse`: they implement `_solve`, a
numerical inverse run without gradients, and inherit a single Newton step that makes the result
differentiable with the exact implicit gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from flowviz.core.handles import (  # noqa: F401  (the layers import them from here)
    Handle,
    HandleError,
    HandleValue,
    Movable,
    as_pair,
    softplus_inverse,
)
from flowviz.core.registry import Registry
from flowviz.core.settings import Setting

Direction = Literal["both", "forward", "inverse"]
@dataclass(frozen=True)
class LayerInfo:
    """What the palette, the forms and the docs show about a layer type."""

    name: str
    title: str
    description: str
    reference: str
    settings: tuple[Setting, ...] = ()
    tex_map: str = ""  # the map x = f(z), in LaTeX, in the notation of the layer's paper
    tex_log_det: str = ""  # its ln|det J|, in LaTeX
    cheap_direction: Direction = "both"  # which direction costs one pass (MAF: inverse, IAF: forward)
    iterative_inverse: bool = False
    handles: tuple[Handle, ...] = ()  # what hand mode lets a person move (`Layer.handles`, `Layer.move`)


class Layer(Movable, nn.Module):
    """An invertible 2-D transform with log-determinants in both directions."""

    info: ClassVar[LayerInfo]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:  # base -> data
        raise NotImplementedError

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:  # data -> base
        raise NotImplementedError

    def inverse_on_grid(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        """`inverse` at every point of the grid xs × ys, x varying fastest. The grid views call it
        once per depth; a layer that can use the grid's structure overrides it."""
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return self.inverse(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))

    def unfold(self, parts: int) -> list[Layer]:
        """The layer as consecutive parts the views can show one by one (a continuous flow's time
        slices); most layers are one part."""
        return [self]


class IterativeInverse(Layer):
    """A layer whose inverse is found numerically (accurate to well below 1e-5)."""

    def _solve(self, x: Tensor) -> Tensor:
        """Return z with forward(z) == x, computed without gradients."""
        raise NotImplementedError

    def _jacobian(self, z: Tensor) -> Tensor:
        """Per-point forward Jacobian, shape (N, 2, 2), without a graph."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            x, _ = self.forward(z)
            rows = [torch.autograd.grad(x[:, i].sum(), z, retain_graph=i == 0)[0] for i in range(2)]
        return torch.stack(rows, dim=1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            z = self._solve(x)
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if needs_graph:
            # One Newton step from the root: its value is the root, and because the residual is
            # zero there, its derivative is exactly the implicit one, -J^{-1} dF/dtheta.
            jac = self._jacobian(z)
            residual = self.forward(z)[0] - x
            z = z - torch.linalg.solve(jac, residual.unsqueeze(-1)).squeeze(-1)
        _, ladj = self.forward(z)
        return z, -ladj


LAYERS: Registry[type[Layer]] = Registry("layer")
register = LAYERS.register
