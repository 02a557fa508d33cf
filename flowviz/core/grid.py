"""Grid evaluation for the per-layer views.

For a view box and resolution, at every depth k = 0..K (K active layers):
- `log_q[k]`: ln q_k on the grid, through the inverse chain z_k -> z_{k-1} -> ... -> z_0;
- `log_det[k]`: layer k's own forward ln|det J_k|, at the point it maps onto each grid point;
- `cum_log_det[k]`: Σ_{j<=k} of those along the chain, so that pixel by pixel
  log_q[k] = ln q_0(z_0) - cum_log_det[k]  (the change-of-variables identity, exactly as computed);
- `samples[k]`: the same base samples pushed through the first k layers (follow a point by index);
- `grid_lines[k]`: lines of a square grid in base space, warped through the first k layers.

The inverse chains for all depths share one pass per layer: going from the top layer down, each
layer inverts, in one batch, the grid copies of every depth at or above it. That is K(K+1)/2 grid
inversions in K batches; the first one of each copy is on the regular grid, where a coupling layer
runs its network once per row or column (`Layer.inverse_on_grid`).

Example:
    >>> from flowviz.core.bases import make_base
    >>> from flowviz.core.layers import make_layer
    >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling"), make_layer("planar")])
    >>> views = evaluate_grid(flow, GridRequest(resolution=64))
    >>> views.log_q.shape   # depths k = 0..K, K = 2
    (3, 64, 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from flowviz.core.flow import Flow

if TYPE_CHECKING:
    from flowviz.core.spec import ViewSpec


@dataclass(frozen=True)
class GridRequest:
    xmin: float = -4.0
    xmax: float = 4.0
    ymin: float = -4.0
    ymax: float = 4.0
    resolution: int = 128
    grid_lines: int = 17  # lines per direction in the warped base grid
    line_points: int = 65  # points along each line

    @classmethod
    def from_view(cls, view: ViewSpec) -> GridRequest:
        return cls(view.xmin, view.xmax, view.ymin, view.ymax, view.resolution)

    def axes(self) -> tuple[Tensor, Tensor]:
        return (torch.linspace(self.xmin, self.xmax, self.resolution), torch.linspace(self.ymin, self.ymax, self.resolution))

    def points(self) -> Tensor:
        """Grid points, row-major with y varying slowest: reshape to (resolution, resolution)."""
        xs, ys = self.axes()
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)

    def lines(self) -> Tensor:
        """(2 * grid_lines, line_points, 2): horizontal then vertical lines across the view."""
        xs = torch.linspace(self.xmin, self.xmax, self.line_points)
        ys = torch.linspace(self.ymin, self.ymax, self.line_points)
        at_x = torch.linspace(self.xmin, self.xmax, self.grid_lines)
        at_y = torch.linspace(self.ymin, self.ymax, self.grid_lines)
        horizontal = torch.stack([xs.expand(self.grid_lines, -1), at_y[:, None].expand(-1, self.line_points)], -1)
        vertical = torch.stack([at_x[:, None].expand(-1, self.line_points), ys.expand(self.grid_lines, -1)], -1)
        return torch.cat([horizontal, vertical])


@dataclass
class GridViews:
    """Everything the per-layer views draw, as float32 numpy arrays; index 0 is the base."""

    x: np.ndarray  # (R,) grid x coordinates
    y: np.ndarray  # (R,) grid y coordinates
    log_q: np.ndarray  # (K+1, R, R), rows follow y
    log_det: np.ndarray  # (K+1, R, R); zero at k = 0
    cum_log_det: np.ndarray  # (K+1, R, R)
    samples: np.ndarray  # (K+1, N, 2)
    grid_lines: np.ndarray  # (K+1, L, P, 2)
    layers: list[int]  # stack position of the layer at each depth 1..K


@torch.no_grad()
def evaluate_grid(flow: Flow, request: GridRequest, base_samples: Tensor | None = None) -> GridViews:
    """Evaluate every depth of `flow` on `request`'s grid (in eval mode; the flow's mode is kept)."""
    with flow.evaluating():
        return _evaluate(flow, request, base_samples)


def _evaluate(flow: Flow, request: GridRequest, base_samples: Tensor | None) -> GridViews:
    device = flow.device
    active = flow.active()
    depth = len(active)
    r2 = request.resolution**2
    xs, ys = (axis.to(device) for axis in request.axes())
    grid = request.points().to(device)

    # Block j of `chain` (rows [j R², (j+1) R²)) holds the grid copy that started at depth K - j;
    # after layer k's pass, blocks 0..K-k are at depth k - 1. Filled in place: no growing copies.
    chain = grid.new_empty(depth * r2, 2)
    cum = grid.new_zeros(depth * r2)
    own = grid.new_zeros(depth + 1, r2)
    for k in range(depth, 0, -1):
        _, layer = active[k - 1]
        started = (depth - k) * r2  # rows of the copies that started deeper than k
        _inverse_in_place(layer, chain[:started], cum[:started])
        fresh, ladj = layer.inverse_on_grid(xs, ys)  # the copy that starts at depth k
        chain[started : started + r2] = fresh
        cum[started : started + r2] = -ladj
        own[k] = -ladj  # layer k's own forward log-det at the point it maps onto each pixel
    log_q = flow.base.log_prob(chain) - cum if depth else cum
    # Stored deepest-first; flip so index k is depth k, with the untouched grid at depth 0.
    shape = (depth + 1, request.resolution, request.resolution)
    log_q = torch.cat([flow.base.log_prob(grid), log_q.view(depth, r2).flip(0).reshape(-1)]).view(shape)
    cum = torch.cat([grid.new_zeros(r2), cum.view(depth, r2).flip(0).reshape(-1)]).view(shape)

    if base_samples is None:
        base_samples = torch.empty(0, 2)
    samples, _ = flow.trace(base_samples.to(device))
    lines = request.lines().to(device)
    warped, _ = flow.trace(lines.reshape(-1, 2))
    return GridViews(
        x=_numpy(xs),
        y=_numpy(ys),
        log_q=_numpy(log_q),
        log_det=_numpy(own.view(shape)),
        cum_log_det=_numpy(cum),
        samples=_numpy(torch.stack(samples)),
        grid_lines=_numpy(torch.stack(warped).view(depth + 1, *lines.shape)),
        layers=[position for position, _ in active],
    )


CHUNK = 8192  # points per layer call: a 64-wide hidden activation (2 MB) stays in the two cores' L2


def _inverse_in_place(layer, points: Tensor, cum: Tensor) -> None:
    """points <- layer⁻¹(points) and cum -= its ln|det|, a chunk at a time on a CPU."""
    if len(points) == 0:
        return
    size = CHUNK if points.device.type == "cpu" else len(points)
    for part, part_cum in zip(points.split(size), cum.split(size)):
        out, ladj = layer.inverse(part)
        part.copy_(out)
        part_cum.sub_(ladj)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


@torch.no_grad()
def target_image(target, request: GridRequest, samples: int = 100_000, seed: int = 0) -> np.ndarray:
    """The target's density on the grid: exact where known, else a normalised histogram of samples."""
    if target.info.exact_density:
        return _numpy(target.log_prob(request.points()).exp().view(request.resolution, request.resolution))
    points = target.sample(samples, torch.Generator().manual_seed(seed)).numpy()
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=request.resolution,
                                  range=[[request.ymin, request.ymax], [request.xmin, request.xmax]])
    cell = (request.xmax - request.xmin) * (request.ymax - request.ymin) / request.resolution**2
    return (counts / (samples * cell)).astype(np.float32)
