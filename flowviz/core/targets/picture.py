"""A picture as a target density: each pixel a square of the plane, its density set by its grey level.

p is constant on each pixel's square and proportional to its darkness (or brightness), zero outside
the picture, so ln p, the entropy and the sampler are exact: pick a pixel with probability w_ij, then
a point uniformly in its square. Like the checkerboard it has edges and empty regions, so only
forward KL trains on it.

Example:
    >>> target = Picture("smiley")
    >>> x = target.sample(4000, torch.Generator().manual_seed(0))
    >>> bool(torch.isfinite(target.log_prob(x)).all()), round(-float(target.log_prob(x).mean()), 2)
    (True, 2.76)
    >>> round(target.entropy(), 2)  # what the mean above estimates
    2.76
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from flowviz.core.settings import Setting
from flowviz.core.targets.base import Target, TargetInfo, register

PICTURES = Path(__file__).resolve().parent / "pictures"  # drawn by assets/make_pictures.py
BUILT_IN = ("smiley", "logo")
UPLOADED = "uploaded"


def built_in_picture(name: str) -> np.ndarray:
    """The grey levels of a picture shipped with flowviz."""
    with Image.open(PICTURES / f"{name}.png") as image:
        return np.asarray(image.convert("L"), np.uint8).copy()


@register(
    TargetInfo(
        "image", "Picture",
        "A picture as the density: darker pixels are denser, constant within each pixel. A face, flowviz's logo, "
        "or your own PNG or JPEG.",
        "picture", exact_density=True,
        settings=(
            Setting("picture", "choice", "smiley", choices=(*BUILT_IN, UPLOADED),
                    choice_labels=("a face", "flowviz's logo", "your upload"), label="Picture",
                    doc="a built-in picture, or the one you uploaded (it travels in the link and the preset)"),
            Setting("dark_is_dense", "bool", True, label="Dark pixels are dense",
                    doc="density grows with darkness (a drawing on white); off: with brightness (a photo of stars)"),
            Setting("size", "float", 7.0, low=0.5, high=100.0, label="Width of its longer side",
                    doc="the picture is centred at 0 and spans this much of the plane along its longer side"),
        ),
        reference="a piecewise-constant density, as in the image targets of Grathwohl et al. (2019), FFJORD",
    )
)
class Picture(Target):
    def __init__(self, picture: str = "smiley", dark_is_dense: bool = True, size: float = 7.0,
                 grey: np.ndarray | None = None):
        if grey is None:
            if picture not in BUILT_IN:
                raise ValueError(f"the picture {picture!r} needs its pixels; upload one or pick {', '.join(BUILT_IN)}")
            grey = built_in_picture(picture)
        level = np.asarray(grey, np.float64)
        weight = 255.0 - level if dark_is_dense else level
        total = weight.sum()
        if total <= 0:
            shade = "white" if dark_is_dense else "black"
            raise ValueError(f"the picture is all {shade}, so it has no density; upload one with some "
                             f"{'dark' if dark_is_dense else 'bright'} pixels, or switch 'dark pixels are dense'")
        self.rows, self.cols = level.shape
        self.pixel = size / max(self.rows, self.cols)  # side of one pixel's square on the plane
        self.left, self.top = -self.cols * self.pixel / 2, self.rows * self.pixel / 2
        self.weights = torch.as_tensor(weight / total, dtype=torch.float64).flatten()  # row-major, top row first
        with np.errstate(divide="ignore"):
            log_density = np.log(weight / total) - 2 * math.log(self.pixel)
        self.log_density = torch.as_tensor(log_density.ravel(), dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        pixel = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        within = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        x = self.left + (pixel % self.cols + within[:, 0]) * self.pixel
        y = self.top - (pixel // self.cols + within[:, 1]) * self.pixel
        points = torch.stack([x, y], -1).float()
        # Rounding to float32 can carry a point just across its pixel's edge, maybe onto a white pixel
        # (ln p = -inf at a sample of p): one step of float32 towards the pixel's centre puts it back.
        centres = torch.stack([self.left + (pixel % self.cols + 0.5) * self.pixel,
                               self.top - (pixel // self.cols + 0.5) * self.pixel], -1).float()
        for _ in range(2):
            strayed = self._pixel_of(points) != pixel
            if not strayed.any():
                break
            points[strayed] = torch.nextafter(points[strayed], centres[strayed])
        return points

    def _pixel_of(self, x: Tensor) -> Tensor:
        """The index (row-major, top row first) of the pixel under each point; -1 outside the picture."""
        col = torch.floor((x[:, 0].double() - self.left) / self.pixel)
        row = torch.floor((self.top - x[:, 1].double()) / self.pixel)
        inside = (col >= 0) & (col < self.cols) & (row >= 0) & (row < self.rows)
        return torch.where(inside, row * self.cols + col, -1.0).long()

    def log_prob(self, x: Tensor) -> Tensor:
        index = self._pixel_of(x)
        inside = index >= 0
        log_p = torch.where(inside, self.log_density.to(x.device)[index.clamp_min(0)], -math.inf)
        return log_p.to(x.dtype)

    def entropy(self) -> float:
        """H(p) = −Σ w ln(w / a) over the pixels, a a pixel's area: the floor of the expected NLL."""
        w = self.weights[self.weights > 0]
        return float(-(w * (w.log() - 2 * math.log(self.pixel))).sum())
