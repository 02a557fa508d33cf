"""User point sets: an N×2 array, optionally standardised, split into training and held-out points."""

from __future__ import annotations

import torch
from torch import Tensor

from flowviz.core.limits import LIMITS
from flowviz.core.settings import Setting
from flowviz.core.targets.base import Target, TargetInfo, register


@register(
    TargetInfo(
        "points", "Your points", "A set of 2-D points you provide; trained on by resampling, with a held-out split.",
        "points",
        settings=(
            Setting("standardize", "bool", True, doc="shift and scale to zero mean and unit variance per axis"),
            Setting("test_fraction", "float", 0.2, low=0.0, high=0.5, doc="share of the points held out for the test NLL"),
        ),
    )
)
class Points(Target):
    def __init__(self, points: Tensor, standardize: bool = True, test_fraction: float = 0.2, seed: int = 0):
        points = torch.as_tensor(points, dtype=torch.float32)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"expected an N×2 array of points, got shape {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise ValueError("points contain NaN or infinite values")
        if not 2 <= points.shape[0] <= LIMITS.max_points:
            raise ValueError(f"expected 2 to {LIMITS.max_points} points, got {points.shape[0]}")
        if standardize:
            points = (points - points.mean(0)) / points.std(0).clamp_min(1e-8)
        order = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(seed))
        n_test = round(test_fraction * points.shape[0])
        self.test_points, self.train_points = points[order[:n_test]], points[order[n_test:]]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.train_points[torch.randint(self.train_points.shape[0], (n,), generator=generator)]

    def held_out(self, n: int, seed: int) -> Tensor:
        return self.test_points if self.test_points.shape[0] else self.train_points
