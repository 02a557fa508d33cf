"""Shared test helpers: random but valid layers, and per-point autograd Jacobians."""

from __future__ import annotations

import random

import torch

from flowviz.core.layers import LAYERS, Layer, make_layer
from flowviz.core.settings import Setting


def random_settings(settings: tuple[Setting, ...], rng: random.Random) -> dict:
    """Valid settings drawn across their ranges, with network sizes kept small for speed."""
    out = {}
    for s in settings:
        if s.kind == "choice":
            out[s.name] = rng.choice(s.choices)
        elif s.kind == "bool":
            out[s.name] = rng.random() < 0.5
        elif s.kind == "int":
            high = min(s.high, 16) if s.name in ("hidden", "bins") else min(s.high, 3)
            out[s.name] = rng.randint(int(s.low), int(high))
        else:
            out[s.name] = rng.uniform(s.low, min(s.high, 10.0))
    return out


def random_layer(name: str, seed: int, dtype=torch.float64, noise: float = 0.5) -> Layer:
    """A layer of type `name` with random settings and parameters, initialised and in eval mode."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    layer = make_layer(name, random_settings(LAYERS[name].info.settings, rng)).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(noise * torch.randn_like(p))
    layer.train()
    layer(torch.randn(256, 2, dtype=dtype) * 2)  # data-dependent initialisation (ActNorm), batch statistics
    layer.eval()
    return layer


def plane_points(seed: int, n: int = 64, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    """Points from the centre and from far out: half N(0, 1), half N(0, scale²)."""
    g = torch.Generator().manual_seed(seed)
    near = torch.randn(n // 2, 2, generator=g, dtype=dtype)
    far = torch.randn(n - n // 2, 2, generator=g, dtype=dtype) * scale
    return torch.cat([near, far])


def jacobians(fn, points: torch.Tensor) -> torch.Tensor:
    """Per-point Jacobians (N, 2, 2) of a pointwise map by autograd (rows = outputs)."""
    points = points.detach().requires_grad_(True)
    out = fn(points)[0]
    rows = [torch.autograd.grad(out[:, i].sum(), points, retain_graph=True)[0] for i in range(2)]
    return torch.stack(rows, dim=1)
