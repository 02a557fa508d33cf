"""The change-of-variables ledger: one point followed through every layer of a flow.

For a point picked at depth k (a point z_k of the plane after k active layers), the ledger inverts
the first k layers to find where it started, z_0, then pushes z_0 forward through the whole stack:

    ln q_K(z_K) = ln q_0(z_0) - Σ_k ln|det J_k(z_{k-1})|        (Rezende & Mohamed 2015, eq. 7)

Every row holds z_k, layer k's own ln|det J_k| and the running density ln q_k(z_k); a continuous
flow's row also holds its solver steps, each with its exact ln|det J| and the continuous estimate
∫ tr ∂v/∂x dt over the same step (`SolverStep`). The total is
set beside ln q_K(z_K) evaluated directly, through the inverse chain from z_K, the way the density
views compute it. The two are independent computations of one number, so they agree to float64
round-off (to the solver tolerance where a layer's inverse is numerical).

Example:
    >>> from flowviz.core.bases import make_base
    >>> from flowviz.core.layers import make_layer
    >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling"), make_layer("swap")])
    >>> ledger = follow(flow, (0.5, -1.0), depth=len(flow.active()))
    >>> [row.layer for row in ledger.rows]
    ['base', 'affine_coupling', 'swap']
    >>> abs(ledger.log_q_sum - ledger.log_q_direct) < 1e-6
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from flowviz.core.flow import Flow
from flowviz.core.layers.continuous import SolverStep


@dataclass(frozen=True)
class LedgerRow:
    depth: int  # k: 0 is the base
    position: int | None  # the layer's place in the stack (None for the base row)
    layer: str  # layer type, or "base"
    point: tuple[float, float]  # z_k
    log_det: float  # ln|det J_k| at z_{k-1} (0 for the base row)
    log_q: float  # ln q_k(z_k) = ln q_0(z_0) - Σ_{j≤k} ln|det J_j|
    title: str = ""  # what the layer (or time slice) is called
    steps: tuple[SolverStep, ...] = ()  # a continuous layer's solver steps, in order

    @property
    def trace(self) -> float | None:
        """A continuous layer's ∫ tr ∂v/∂x dt by its solver's quadrature (None for other layers)."""
        return sum(step.trace for step in self.steps) if self.steps else None


@dataclass(frozen=True)
class Ledger:
    picked_depth: int
    picked: tuple[float, float]
    rows: tuple[LedgerRow, ...]
    log_q0: float  # ln q_0(z_0)
    log_det_sum: float  # Σ_k ln|det J_k|
    log_q_sum: float  # ln q_0(z_0) - Σ_k ln|det J_k|
    log_q_direct: float  # ln q_K(z_K) through the inverse chain from z_K

    @property
    def continuous_gap(self) -> float | None:
        """Σ over continuous rows of exact ln|det J| minus the integrated trace: the solver's error in
        the continuous identity, which the exact sum does not have (None without continuous rows)."""
        rows = [row for row in self.rows if row.steps]
        return sum(row.log_det - row.trace for row in rows) if rows else None

    @property
    def agreement(self) -> float:
        """|sum - direct| in nats (0 when both are -inf: a point outside the base's support)."""
        if self.log_q_sum == self.log_q_direct:
            return 0.0
        return abs(self.log_q_sum - self.log_q_direct)


@torch.no_grad()
def follow(flow: Flow, point: tuple[float, float], depth: int) -> Ledger:
    """Follow `point`, a point of the plane after `depth` active layers, through the whole flow.

    The arithmetic runs on a float64 copy of the flow in eval mode, so the ledger's sums are exact to
    round-off; the flow itself is not touched.
    """
    active_count = len(flow.active())
    if not 0 <= depth <= active_count:
        raise ValueError(f"depth {depth} is outside 0..{active_count}")
    exact = copy.deepcopy(flow).to(device="cpu", dtype=torch.float64).eval()
    active = exact.active()
    z = torch.tensor([point], dtype=torch.float64)
    for _, layer in reversed(active[:depth]):
        z, _ = layer.inverse(z)
    log_q0 = float(exact.base.log_prob(z)[0])
    rows = [LedgerRow(0, None, "base", _pair(z), 0.0, log_q0, "base")]
    running = log_q0
    total = 0.0
    for k, (position, layer) in enumerate(active, start=1):
        steps = tuple(layer.walk(z)) if hasattr(layer, "walk") else ()
        z, ladj = layer(z)
        total += float(ladj[0])
        running = log_q0 - total
        rows.append(LedgerRow(k, position, layer.info.name, _pair(z), float(ladj[0]), running, layer.info.title, steps))
    direct = float(exact.log_prob(z)[0])
    return Ledger(depth, (float(point[0]), float(point[1])), tuple(rows), log_q0, total, running, direct)


def _pair(z: torch.Tensor) -> tuple[float, float]:
    return float(z[0, 0]), float(z[0, 1])
