"""How good a fit is, in the figures papers report: importance-sampling effective sample sizes, the
estimate of ln Z, and the KL after every layer.

For a target p = p̃ / Z (p̃ = exp(-U) for an energy) and the model q:
- reverse (samples x ~ q): ln w = ln p̃(x) - ln q(x). ln Ẑ = logsumexp(ln w) - ln N estimates ln Z;
  the normalised ESS = (Σw)² / (N Σw²) ∈ (0, 1]; by the delta method se(ln Ẑ) ≈ √(1/ESS_abs - 1/N)
  with ESS_abs = N · ESS.
- forward (samples x ~ p, where the target draws them): 1 / (mean(w) · mean(1/w)), the same ESS
  estimated from the target's side, which sees the modes q misses (Midgley et al. 2023, FAB,
  arXiv:2208.01893), where a reverse-KL fit that dropped a mode can still look fine from q's side.
- by depth: the KL between p and q_k, the flow cut after its first k layers, for k = 0..K, in the
  direction training minimises: which layers earn their keep.

Example:
    >>> import math
    >>> log_w = torch.full((1000,), math.log(3.0))  # q is p exactly, with Z = 3
    >>> fit = importance(log_w)
    >>> round(fit.ess, 6), round(fit.log_z, 6), round(fit.log_z_se, 6)
    (1.0, 1.098612, 0.0)
    >>> round(forward_ess(log_w), 6)
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowviz.core.flow import Flow
from flowviz.core.grid import log_q_by_depth


@dataclass(frozen=True)
class ImportanceFit:
    ess: float  # normalised effective sample size, in (0, 1]
    log_z: float  # ln Ẑ
    log_z_se: float  # its standard error (delta method)
    samples: int


def importance(log_w: Tensor) -> ImportanceFit:
    """ESS and ln Ẑ from log importance weights of samples drawn from q (non-finite weights count
    as zero: a point outside the target's support)."""
    log_w = torch.nan_to_num(log_w.double(), nan=-math.inf, posinf=math.inf)
    n = log_w.numel()
    total = torch.logsumexp(log_w, 0)
    ess = float(torch.exp(2 * total - torch.logsumexp(2 * log_w, 0))) / n
    ess = ess if math.isfinite(ess) else 0.0
    log_z = float(total) - math.log(n)
    se = math.sqrt(max(1 / (n * ess) - 1 / n, 0.0)) if ess > 0 else math.inf
    return ImportanceFit(ess, log_z, se, n)


def forward_ess(log_w: Tensor) -> float:
    """The normalised ESS estimated from samples of the target: 1 / (mean(w) · mean(1/w))."""
    log_w = log_w.double()
    n = math.log(log_w.numel())
    value = math.exp(-((torch.logsumexp(log_w, 0) - n) + (torch.logsumexp(-log_w, 0) - n)))
    return min(value, 1.0) if math.isfinite(value) else 0.0


@torch.no_grad()
def kl_by_depth(flow: Flow, target, reverse: bool, points: Tensor, log_p: Tensor | None = None) -> list[float]:
    """KL between the target (exact ln p) and q_k for every depth k = 0..K, by Monte Carlo.

    reverse: KL(q_k‖p) from `points` drawn from the base, pushed through the layers (one pass);
    otherwise KL(p‖q_k) at `points` drawn from the target, each depth through its inverse chain
    (`log_p`: the target's ln p at `points`, if known already: the same held-out points every time).
    The last value is the KL of the whole flow, as `Trainer.evaluate` reports it from the same points.

    Example:
        >>> from flowviz.core.bases import make_base
        >>> from flowviz.core.layers import make_layer
        >>> from flowviz.core.targets import TARGETS
        >>> flow = Flow(make_base("standard_normal"), [make_layer("affine_coupling")])
        >>> x = TARGETS["8gaussians"]().sample(2000, torch.Generator().manual_seed(0))
        >>> [round(v, 2) for v in kl_by_depth(flow, TARGETS["8gaussians"](), False, x)]  # a coupling starts as the identity
        [3.16, 3.16]
    """
    with flow.evaluating():
        if reverse:
            log_q, cum = [flow.base.log_prob(points)], points.new_zeros(len(points))
            depths = [points]
            for _, layer in flow.active():
                z, ladj = layer(depths[-1])
                cum = cum + ladj
                depths.append(z)
                log_q.append(log_q[0] - cum)
            return [float((lq - target.log_prob(z)).double().mean()) for lq, z in zip(log_q, depths)]
        log_p = target.log_prob(points) if log_p is None else log_p  # (+inf where q_k = 0 inside p's support: a uniform base's edge)
        return [float((log_p - lq).double().mean()) for lq in log_q_by_depth(flow, points)]
