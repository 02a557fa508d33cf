"""How good a fit is, in the figures papers report: importance-sampling effective sample sizes and
the estimate of ln Z.

For a target p = p̃ / Z (p̃ = exp(-U) for an energy) and the model q:
- reverse (samples x ~ q): ln w = ln p̃(x) - ln q(x). ln Ẑ = logsumexp(ln w) - ln N estimates ln Z;
  the normalised ESS = (Σw)² / (N Σw²) ∈ (0, 1]; by the delta method se(ln Ẑ) ≈ √(1/ESS_abs - 1/N)
  with ESS_abs = N · ESS.
- forward (samples x ~ p, where the target draws them): 1 / (mean(w) · mean(1/w)), the same ESS
  estimated from the target's side, which sees the modes q misses (Midgley et al. 2023, FAB,
  arXiv:2208.01893), where a reverse-KL fit that dropped a mode can still look fine from q's side.

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
