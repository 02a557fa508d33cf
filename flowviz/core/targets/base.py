"""The target interface and registry.

A target is what the flow learns: it can draw samples (forward-KL training, held-out NLL) and, for
many targets, evaluate its exact normalised log-density (true KL, reverse-KL training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from flowviz.core.registry import Registry
from flowviz.core.settings import Setting

TargetKind = Literal["toy", "energy", "picture", "points"]


@dataclass(frozen=True)
class TargetInfo:
    name: str
    title: str
    description: str
    kind: TargetKind
    settings: tuple[Setting, ...] = ()
    exact_density: bool = False  # log_prob is the exact normalised density
    smooth_density: bool = False  # finite log-density everywhere: reverse KL can train on it
    entropy: float | None = None  # H(p) in nats, the floor of the expected NLL, where known
    reference: str = ""


class Target:
    info: TargetInfo
    log_z: float = 0.0  # ln of the normaliser of exp(-energy); 0 where energy = -ln p

    def energy(self, x: Tensor) -> Tensor:
        """U(x) with p(x) = exp(-U(x)) / exp(log_z): what reverse-KL training minimises against."""
        return -self.log_prob(x)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n points, shape (n, 2), float32 on the CPU; the same generator state gives the same points."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact normalised ln p(x); only for targets with `info.exact_density`."""
        raise NotImplementedError(f"target {self.info.name!r} has no exact density")

    def entropy(self) -> float | None:
        """H(p) in nats where known: the floor of the expected NLL (a picture's depends on the picture)."""
        return self.info.entropy

    def held_out(self, n: int, seed: int) -> Tensor:
        """A fixed evaluation set, drawn from its own stream so it never overlaps training batches."""
        return self.sample(n, torch.Generator().manual_seed(seed + 7_919))


def log_normal_2d(x: Tensor, centers: Tensor, sigma: float) -> Tensor:
    """ln N(x; c, σ² I) for every point and centre: shape (N, C)."""
    sq = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return -sq / (2 * sigma**2) - math.log(2 * math.pi * sigma**2)


TARGETS: Registry[type[Target]] = Registry("target")
register = TARGETS.register
