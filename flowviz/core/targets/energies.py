"""The energy targets U1–U4 of Rezende & Mohamed (2015), Table 1: p(z) ∝ exp(-U(z)).

exp(-U2..U4) do not decay along z1, so alone they are not normalisable. flowviz adds a wall,
½((|z1| - 4)₊ / 0.1)², that leaves the paper's (-4, 4)² box untouched and makes the density proper;
`log_z` is its normaliser (grid quadrature, checked by the tests), so reverse-KL training reports the
true KL(q‖p) = loss + ln Z. `log_z_box` is ln ∫ over (-4, 4)² of the paper's exp(-U), for reference.

Energies sample by inverse CDF on a fine grid (a cell picked by its probability mass, then a
uniform point within it), so forward KL, held-out NLL and the target view work for them too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowviz.core.targets.base import Target, TargetInfo, register

REZENDE = "Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, arXiv:1505.05770, Table 1"
WALL_AT, WALL_WIDTH = 4.0, 0.1


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _neg_log_sum_exp(a: Tensor, b: Tensor) -> Tensor:
    return -torch.logaddexp(a, b)


def u1(z: Tensor) -> Tensor:
    z1 = z[:, 0]
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return ring + _neg_log_sum_exp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def u2(z: Tensor) -> Tensor:
    return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


def u3(z: Tensor) -> Tensor:
    z1, z2 = z[:, 0], z[:, 1]
    w1 = _w1(z1)
    return _neg_log_sum_exp(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + _w2(z1)) / 0.35) ** 2)


def u4(z: Tensor) -> Tensor:
    z1, z2 = z[:, 0], z[:, 1]
    w1 = _w1(z1)
    return _neg_log_sum_exp(-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + _w3(z1)) / 0.35) ** 2)


def wall(z: Tensor) -> Tensor:
    return 0.5 * (torch.relu(z[:, 0].abs() - WALL_AT) / WALL_WIDTH) ** 2


class Energy(Target):
    """p(z) = exp(-U(z)) / Z on the plane."""

    log_z: float
    log_z_box: float
    walled: bool = True
    sample_box, sample_cells = 5.0, 1024

    @staticmethod
    def paper_energy(z: Tensor) -> Tensor:
        raise NotImplementedError

    def energy(self, z: Tensor) -> Tensor:
        u = self.paper_energy(z)
        return u + wall(z) if self.walled else u

    def log_prob(self, x: Tensor) -> Tensor:
        return -self.energy(x) - self.log_z

    def _cells(self) -> tuple[Tensor, Tensor, float]:
        """Cell centres and the cumulative cell masses, computed once per target object (a session's own)."""
        if getattr(self, "_cached_cells", None) is None:
            cells, box = self.sample_cells, self.sample_box
            width = 2 * box / cells
            centers = -box + width * (torch.arange(cells, dtype=torch.float64) + 0.5)
            grid = torch.stack(torch.meshgrid(centers, centers, indexing="xy"), -1).reshape(-1, 2)
            cdf = torch.cumsum(torch.softmax(-self.energy(grid), 0), 0)
            self._cached_cells = (grid, cdf, width)
        return self._cached_cells

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        grid, cdf, width = self._cells()
        u = torch.rand(n, generator=generator, dtype=torch.float64) * cdf[-1]
        index = torch.searchsorted(cdf, u).clamp_max(len(cdf) - 1)
        jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * width
        return (grid[index] + jitter).float()


def _energy_info(name: str, title: str, description: str, entropy: float) -> TargetInfo:
    return TargetInfo(name, title, description, "energy", exact_density=True, smooth_density=True, entropy=entropy, reference=REZENDE)


@register(_energy_info("u1", "U1 (ring)", "A ring of radius 2 split into two arcs left and right.", 2.6600))
class U1(Energy):
    paper_energy = staticmethod(u1)
    walled = False  # decays in every direction already
    log_z = 1.8775
    log_z_box = 1.8775


@register(_energy_info("u2", "U2 (wave)", "A sine-shaped ridge z2 ≈ sin(πz1/2).", 2.6281))
class U2(Energy):
    paper_energy = staticmethod(u2)
    log_z = 2.1129
    log_z_box = 2.0818


@register(_energy_info("u3", "U3 (split wave)", "The wave and a second ridge that splits off near z1 = 1.", 2.6673))
class U3(Energy):
    paper_energy = staticmethod(u3)
    log_z = 2.6726
    log_z_box = 2.6415


@register(_energy_info("u4", "U4 (step wave)", "The wave and a second ridge shifted by a smooth step.", 2.8579))
class U4(Energy):
    paper_energy = staticmethod(u4)
    log_z = 2.7416
    log_z_box = 2.6842
