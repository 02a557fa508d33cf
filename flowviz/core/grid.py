"""Grid evaluation for the per-layer views.

For a view box and resolution, at every depth k = 0..K (K active layers):
- `log_q[k]`: ln q_k on the grid, through the inverse chain z_k -> z_{k-1} -> ... -> z_0;
- `log_det[k]`: layer k's own forward ln|det J_k|, at the point it maps onto each grid point;
- `cum_log_det[k]`: Σ_{j<=k} of those along the chain, so that pixel by pixel
  log_q[k] = ln q_0(z_0) - cum_log_det[k]  (the change-of-variables identity, exactly as computed);
- `samples[k]`: the same base samples pushed through the first k layers (follow a point by index);
- `grid_lines[k]`: lines of a square grid in base space, warped through the first k layers.

Two ways to get log_q[k], chosen by `exact`:
- exact (the default: paused views, exports, the ledger's numbers): each depth's grid copy is
  inverted all the way to the base. The chains share one pass per layer: going from the top layer
  down, each layer inverts, in one batch, the grid copies of every depth at or above it, K(K+1)/2
  grid inversions in K batches.
- resampled (the live view while training): depth k from depth k-1 by one inversion per pixel,
  ln q_k(x) = ln q_{k-1}(f_k⁻¹(x)) + ln|det J_{f_k⁻¹}(x)|, reading ln q_{k-1} (and the cumulative
  log-det) off the previous depth's image, bicubically (bilinearly where the cubic overshoots). K grid inversions, every one on the regular
  grid. A pixel whose preimage falls outside the view box, or next to a pixel that is not finite,
  takes the exact chain instead, so the error is only the interpolation's, inside the box.
Every first inversion is on the regular grid, where a coupling layer runs its network once per row
or column (`Layer.inverse_on_grid`).

Example:
    >>> from flowviz.core.bases import make_base
    >>> from flowviz.core.layers import make_layer
    >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling"), make_layer("planar")])
    >>> views = evaluate_grid(flow, GridRequest(resolution=64))
    >>> views.log_q.shape   # depths k = 0..K, K = 2
    (3, 64, 64)
    >>> live = evaluate_grid(flow, GridRequest(resolution=64), exact=False)
    >>> bool(abs(live.log_q - views.log_q).max() < 0.05), live.exact
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

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
    exact: bool = True  # False: log_q and cum_log_det were resampled depth to depth (see the module)
    # Continuous layers (a cnf or one of its time slices), by depth k:
    times: dict[int, tuple[float, float]] = field(default_factory=dict)  # the ODE time span [t0, t1]
    paths: dict[int, np.ndarray] = field(default_factory=dict)  # (S + 1, N, 2): samples at every solver step
    arrows: dict[int, np.ndarray] = field(default_factory=dict)  # (M, 4): x, y, v_x, v_y of v(·, t1) on a coarse grid

    def samples_between(self, k: int, f: float) -> np.ndarray:
        """The samples a fraction f of the way from depth k to k + 1: along the solver's path
        through a continuous layer, on straight lines through any other."""
        upper = min(k + 1, len(self.samples) - 1)
        path = self.paths.get(upper)
        if path is None or upper == k:
            return ((1 - f) * self.samples[k] + f * self.samples[upper]).astype(np.float32)
        position = f * (len(path) - 1)
        i = min(int(position), len(path) - 2)
        return ((1 - (position - i)) * path[i] + (position - i) * path[i + 1]).astype(np.float32)

    def time_between(self, k: int, f: float) -> float | None:
        """The ODE time a fraction f of the way through depth k + 1, if that layer is continuous."""
        span = self.times.get(k + 1)
        return None if span is None else span[0] + f * (span[1] - span[0])


@torch.no_grad()
def evaluate_grid(flow: Flow, request: GridRequest, base_samples: Tensor | None = None,
                  exact: bool = True) -> GridViews:
    """Evaluate every depth of `flow` on `request`'s grid (in eval mode; the flow's mode is kept).
    `exact=False` resamples each depth from the one before (K inversions instead of K(K+1)/2)."""
    with flow.evaluating():
        return _evaluate(flow, request, base_samples, exact)


def _evaluate(flow: Flow, request: GridRequest, base_samples: Tensor | None, exact: bool) -> GridViews:
    device = flow.device
    active = flow.active()
    depth = len(active)
    xs, ys = (axis.to(device) for axis in request.axes())
    grid = request.points().to(device)
    shape = (depth + 1, request.resolution, request.resolution)
    if exact:
        log_q, own, cum = _exact_chains(flow, active, request, xs, ys, grid)
    else:
        log_q, own, cum = _resampled_chains(flow, active, request, xs, ys, grid)

    if base_samples is None:
        base_samples = torch.empty(0, 2)
    samples, paths = _trace_samples(active, base_samples.to(device))
    lines = request.lines().to(device)
    warped, _ = flow.trace(lines.reshape(-1, 2))
    continuous = {k: layer for k, (_, layer) in enumerate(active, start=1) if hasattr(layer, "velocity")}
    return GridViews(
        x=_numpy(xs),
        y=_numpy(ys),
        log_q=_numpy(log_q.view(shape)),
        log_det=_numpy(own.view(shape)),
        cum_log_det=_numpy(cum.view(shape)),
        samples=_numpy(torch.stack(samples)),
        grid_lines=_numpy(torch.stack(warped).view(depth + 1, *lines.shape)),
        layers=[position for position, _ in active],
        exact=exact,
        times={k: (layer.t0, layer.t1) for k, layer in continuous.items()},
        paths={k: _numpy(path) for k, path in paths.items()},
        arrows={k: _arrows(layer, request, device) for k, layer in continuous.items()},
    )


ARROWS = 9  # per side of the coarse grid a continuous layer's velocity is drawn on


def _trace_samples(active, z: Tensor) -> tuple[list[Tensor], dict[int, Tensor]]:
    """z_k at every depth and, through a continuous layer, its points at every solver step."""
    points, paths = [z], {}
    for k, (_, layer) in enumerate(active, start=1):
        if hasattr(layer, "paths"):
            paths[k] = layer.paths(points[-1])
            points.append(paths[k][-1])
        else:
            points.append(layer(points[-1])[0])
    return points, paths


def _arrows(layer, request: GridRequest, device) -> np.ndarray:
    """v(x, t1) of a continuous layer on a coarse grid inset in the view: (M, 4) rows x, y, v_x, v_y."""
    inset = GridRequest(*(0.92 * a + 0.08 * b for a, b in ((request.xmin, request.xmax), (request.xmax, request.xmin),
                                                          (request.ymin, request.ymax), (request.ymax, request.ymin))),
                        resolution=ARROWS)
    points = inset.points().to(device)
    return _numpy(torch.cat([points, layer.velocity(points, layer.t1)], 1))


def _exact_chains(flow: Flow, active, request: GridRequest, xs: Tensor, ys: Tensor, grid: Tensor):
    """(log_q, own, cum), each (K+1, R²), every depth's copy inverted down to the base."""
    depth = len(active)
    r2 = request.resolution**2
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
    log_q = torch.cat([flow.base.log_prob(grid), log_q.view(depth, r2).flip(0).reshape(-1)])
    cum = torch.cat([grid.new_zeros(r2), cum.view(depth, r2).flip(0).reshape(-1)])
    return log_q, own, cum


def _resampled_chains(flow: Flow, active, request: GridRequest, xs: Tensor, ys: Tensor, grid: Tensor):
    """(log_q, own, cum), each (K+1, R²), depth k read off depth k-1's image at f_k⁻¹(x)."""
    depth = len(active)
    r2 = request.resolution**2
    log_q = grid.new_empty(depth + 1, r2)
    cum = grid.new_zeros(depth + 1, r2)
    own = grid.new_zeros(depth + 1, r2)
    log_q[0] = flow.base.log_prob(grid)
    for k in range(1, depth + 1):
        _, layer = active[k - 1]
        preimage, ladj = layer.inverse_on_grid(xs, ys)
        own[k] = -ladj
        (q_prev, cum_prev), read = _bicubic(request, preimage, log_q[k - 1], cum[k - 1])
        log_q[k] = torch.where(read, q_prev + ladj, 0.0)
        cum[k] = torch.where(read, cum_prev - ladj, 0.0)
        missed = (~read).nonzero().squeeze(1)
        if len(missed):  # preimage off the image: the exact chain for those pixels alone
            point_cum = -ladj[missed]
            log_q[k, missed] = _to_base(flow, active[: k - 1], preimage[missed].clone(), point_cum)
            cum[k, missed] = point_cum
    return log_q, own, cum


def _bicubic(request: GridRequest, points: Tensor, *images: Tensor) -> tuple[list[Tensor], Tensor]:
    """Each (R²,) image read at `points` (N, 2) by bicubic interpolation, and where the reading is
    sound: the point's 4×4 pixel neighbourhood lies in the grid and the value is finite (a
    non-finite neighbour makes it NaN or infinite). A log-density is locally near quadratic, which
    cubic interpolation follows closely: on a trained 8-layer RealNVP at 96², 60% of bilinear's
    error (L1 of the density 0.026 against 0.044)."""
    side = request.resolution
    u = (points[:, 0] - request.xmin) / (request.xmax - request.xmin) * (side - 1)
    v = (points[:, 1] - request.ymin) / (request.ymax - request.ymin) * (side - 1)
    inside = (u >= 1) & (u <= side - 2) & (v >= 1) & (v <= side - 2)  # (NaN compares False)
    # grid_sample's coordinates, with align_corners: the first and last pixel centres at -1 and 1
    where = (torch.stack([u, v], -1).nan_to_num(0.0) * (2 / (side - 1)) - 1).view(1, 1, -1, 2)
    stacked = torch.stack(images).view(1, len(images), side, side)  # rows follow y
    cubic, linear = (torch.nn.functional.grid_sample(stacked, where, mode=mode, padding_mode="border", align_corners=True)
                     .view(len(images), -1) for mode in ("bicubic", "bilinear"))
    # Cubic interpolation overshoots next to a steep fall (ln q from -10 to -5000 across a pixel):
    # there the bilinear value, which stays between its neighbours, stands instead.
    value = torch.where((cubic - linear).abs() <= CUBIC_TRUST, cubic, linear)
    return list(value), inside & value.isfinite().all(0)


@torch.no_grad()
def output_log_prob(flow: Flow, request: GridRequest) -> np.ndarray:
    """ln q_K on the grid, (R, R), through the exact inverse chain: K inversions per pixel, the
    first on the regular grid. What the model view shows while the strips are resampled.

    Example:
        >>> from flowviz.core.bases import make_base
        >>> from flowviz.core.layers import make_layer
        >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling"), make_layer("planar")])
        >>> image = output_log_prob(flow, GridRequest(resolution=32))
        >>> bool(abs(image - evaluate_grid(flow, GridRequest(resolution=32)).log_q[-1]).max() < 1e-5)
        True
    """
    with flow.evaluating():
        active = flow.active()
        xs, ys = (axis.to(flow.device) for axis in request.axes())
        if not active:
            log_q = flow.base.log_prob(request.points().to(flow.device))
        else:
            points, ladj = active[-1][1].inverse_on_grid(xs, ys)
            log_q = _to_base(flow, active[:-1], points.clone(), -ladj)
        return _numpy(log_q.view(request.resolution, request.resolution))


@torch.no_grad()
def log_q_by_depth(flow: Flow, points: Tensor) -> Tensor:
    """ln q_k at the same points for every depth k = 0..K: (K+1, N), each depth through its exact
    inverse chain. Like the exact grid views, the chains share one pass per layer: K(K+1)/2 point
    inversions in K batches.

    Example:
        >>> from flowviz.core.bases import make_base
        >>> from flowviz.core.layers import make_layer
        >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling"), make_layer("planar")])
        >>> x = torch.randn(5, 2)
        >>> by_depth = log_q_by_depth(flow, x)
        >>> by_depth.shape, bool(torch.allclose(by_depth[-1], flow.eval().log_prob(x), atol=1e-5))
        (torch.Size([3, 5]), True)
    """
    with flow.evaluating():
        active = flow.active()
        depth, n = len(active), len(points)
        chain = points.new_empty(depth * n, 2)  # block j: the copy that started at depth K - j (as in _exact_chains)
        cum = points.new_zeros(depth * n)
        for k in range(depth, 0, -1):
            started = (depth - k) * n
            chain[started : started + n] = points
            _inverse_in_place(active[k - 1][1], chain[: started + n], cum[: started + n])
        deepest_first = (flow.base.log_prob(chain) - cum).view(depth, n) if depth else points.new_zeros(0, n)
        return torch.cat([flow.base.log_prob(points)[None], deepest_first.flip(0)])


CUBIC_TRUST = 1.0  # nats: how far the cubic reading may stray from the bilinear one
# Points per layer call and intra-op thread: each thread's share of a 64-wide hidden activation
# (4096 x 64 floats, 1 MiB) stays in its core's L2. A session of the app computes on one thread,
# where 8192 points (2 MiB) spilled to L3: the 96² model view took 19.5 ms instead of 9.9.
CHUNK_PER_THREAD = 4096
# ... and for a layer without a network (planar, radial, Sylvester, elementwise, linear), which
# works in a few numbers a point: there the calls' own overhead was the cost. Planar K = 32's first
# 128² render (528 layer inversions, one thread) took 1.19 s in chunks of 4096, 0.55 s in 65,536.
CHUNK_PER_THREAD_WITHOUT_NETWORK = 65536


def _inverse_in_place(layer, points: Tensor, cum: Tensor) -> None:
    """points <- layer⁻¹(points) and cum -= its ln|det|, a chunk at a time on a CPU."""
    if len(points) == 0:
        return
    size = len(points)
    if points.device.type == "cpu":
        networked = any(isinstance(module, nn.Linear) for module in layer.modules())
        size = (CHUNK_PER_THREAD if networked else CHUNK_PER_THREAD_WITHOUT_NETWORK) * torch.get_num_threads()
    for part, part_cum in zip(points.split(size), cum.split(size)):
        out, ladj = layer.inverse(part)
        part.copy_(out)
        part_cum.sub_(ladj)


def _to_base(flow: Flow, active, points: Tensor, cum: Tensor) -> Tensor:
    """ln q at points of the depth above `active` (base side first), `cum` their log-det so far:
    inverted through every layer of `active` down to the base, in place."""
    for _, layer in reversed(active):
        _inverse_in_place(layer, points, cum)
    return flow.base.log_prob(points) - cum


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
