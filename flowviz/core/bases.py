"""Base distributions q_0 on the plane, with optionally learnable parameters.

Log-densities come from `torch.distributions`, with argument validation off: a non-finite point
must give a non-finite density (which training then reports), not an exception. Sampling takes an
explicit `torch.Generator` (so a seed reproduces the same points, and concurrent sessions never
share a random stream) and is reparameterised wherever the family allows, so reverse-KL training
reaches learnable parameters.

Example:
    >>> base = make_base("gaussian_mixture", {"components": 4}, learnable=True)
    >>> z = base.sample(512, torch.Generator().manual_seed(0))
    >>> base.log_prob(z).shape
    torch.Size([512])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributions as D
from torch import Tensor, nn

from flowviz.core.handles import Handle, HandleValue, Movable, as_pair
from flowviz.core.limits import LIMITS
from flowviz.core.registry import Registry
from flowviz.core.settings import Setting


@dataclass(frozen=True)
class BaseInfo:
    name: str
    title: str
    description: str
    settings: tuple[Setting, ...] = ()
    reparameterized: bool = True  # False: samples carry no gradient to the base parameters
    handles: tuple[Handle, ...] = ()  # what hand mode lets a person move (`Base.handles`, `Base.move`)


LOCATION_SCALE_HANDLES = (
    Handle("loc", "point", "the location μ", mark="μ", doc="drag it: the whole base moves with it"),
    Handle("scale_x", "number", "scale along x", low=0.05, high=20.0, log_scale=True,
           doc="widens (> 1) or narrows (< 1) the base along x"),
    Handle("scale_y", "number", "scale along y", low=0.05, high=20.0, log_scale=True,
           doc="widens (> 1) or narrows (< 1) the base along y"),
)

class Base(Movable, nn.Module):
    info: BaseInfo

    def __init__(self, learnable: bool):
        super().__init__()
        self.learnable = learnable

    def _add(self, name: str, value: Tensor) -> None:
        """A parameter when the base learns, a buffer (moved with the model, saved) otherwise."""
        if self.learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def distribution(self) -> D.Distribution:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class LocationScale(Base):
    """A product of one-dimensional location-scale families: z = loc + scale * standard noise."""

    def __init__(self, learnable: bool, loc: tuple[float, float] = (0.0, 0.0), scale: float = 1.0):
        super().__init__(learnable)
        self._add("loc", torch.tensor(loc, dtype=torch.float32))
        self._add("log_scale", torch.full((2,), math.log(scale)))

    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        raise NotImplementedError

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def distribution(self) -> D.Distribution:
        return D.Independent(self.family(self.loc, self.log_scale.exp()), 1, validate_args=False)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        noise = self.standard_noise(n, generator).to(self.loc.device)
        return self.loc + self.log_scale.exp() * noise

    @torch.no_grad()
    def handles(self) -> dict[str, HandleValue]:
        scale = self.log_scale.exp()
        return {"loc": as_pair(self.loc), "scale_x": float(scale[0]), "scale_y": float(scale[1])}

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        self.loc.copy_(torch.tensor(values["loc"]))
        self.log_scale.copy_(torch.tensor([values["scale_x"], values["scale_y"]]).log())


def _uniform(n: int, generator: torch.Generator, tiny: float = 1e-7) -> Tensor:
    return torch.rand(n, 2, generator=generator).clamp(tiny, 1 - tiny)


BASES: Registry[type[Base]] = Registry("base")
register = BASES.register


@register(BaseInfo("standard_normal", "Standard normal", "N(0, I): the usual base; learnable turns it into a diagonal Gaussian.",
                   handles=LOCATION_SCALE_HANDLES))
class StandardNormal(LocationScale):
    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.Normal(loc, scale, validate_args=False)

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, 2, generator=generator)


@register(
    BaseInfo(
        "diagonal_normal",
        "Diagonal Gaussian",
        "N(μ, diag σ²) with its own mean and per-axis scale.",
        settings=(
            Setting("mean_x", "float", 0.0, low=-10, high=10, doc="initial mean of z1"),
            Setting("mean_y", "float", 0.0, low=-10, high=10, doc="initial mean of z2"),
            Setting("scale", "float", 1.0, low=0.01, high=10, log_scale=True, doc="initial standard deviation"),
        ),
        handles=LOCATION_SCALE_HANDLES,
    )
)
class DiagonalNormal(StandardNormal):
    def __init__(self, learnable: bool, mean_x: float = 0.0, mean_y: float = 0.0, scale: float = 1.0):
        super().__init__(learnable, (mean_x, mean_y), scale)


@register(
    BaseInfo(
        "student_t",
        "Student-t",
        "Independent Student-t coordinates: heavy tails for heavy-tailed targets.",
        settings=(
            Setting("df", "float", 3.0, low=0.5, high=100.0, log_scale=True, doc="degrees of freedom (smaller: heavier tails)"),
            Setting("scale", "float", 1.0, low=0.01, high=10, log_scale=True, doc="initial scale"),
        ),
        handles=LOCATION_SCALE_HANDLES,
    )
)
class StudentT(LocationScale):
    def __init__(self, learnable: bool, df: float = 3.0, scale: float = 1.0):
        super().__init__(learnable, scale=scale)
        self.df = df

    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.StudentT(self.df, loc, scale, validate_args=False)

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        # t = N / sqrt(V / df), V ~ chi²(df) = 2 Gamma(df / 2).
        chi2 = 2 * _gamma(torch.full((n, 2), self.df / 2), generator)
        return torch.randn(n, 2, generator=generator) / (chi2 / self.df).sqrt()


def _gamma(shape: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) samples from an explicit generator (Marsaglia & Tsang 2000).

    torch's own gamma sampler takes no generator. Shapes below 1 use Gamma(a) = Gamma(a+1) U^(1/a).
    """
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1 / 3
    c = 1 / (9 * d).sqrt()
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():  # each round accepts >95% of what is left
        x = torch.randn(a.shape, generator=generator)
        v = (1 + c * x) ** 3
        u = torch.rand(a.shape, generator=generator)
        ok = todo & (v > 0) & (u.log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-30).log())
        out = torch.where(ok, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=generator).clamp_min(1e-30)
    return torch.where(boost, out * u ** (1 / shape), out)


@register(BaseInfo("laplace", "Laplace", "Independent Laplace coordinates: a sharp peak and exponential tails.",
                   settings=(Setting("scale", "float", 1.0, low=0.01, high=10, log_scale=True, doc="initial scale"),),
                   handles=LOCATION_SCALE_HANDLES))
class Laplace(LocationScale):
    def __init__(self, learnable: bool, scale: float = 1.0):
        super().__init__(learnable, scale=scale)

    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.Laplace(loc, scale, validate_args=False)

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        u = _uniform(n, generator) - 0.5
        return -u.sign() * torch.log1p(-2 * u.abs())


@register(BaseInfo("logistic", "Logistic", "Independent logistic coordinates: like a Gaussian with heavier, exponential tails.",
                   settings=(Setting("scale", "float", 1.0, low=0.01, high=10, log_scale=True, doc="initial scale"),),
                   handles=LOCATION_SCALE_HANDLES))
class Logistic(LocationScale):
    def __init__(self, learnable: bool, scale: float = 1.0):
        super().__init__(learnable, scale=scale)

    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        uniform = D.Uniform(torch.zeros_like(loc), torch.ones_like(loc), validate_args=False)
        standard = D.TransformedDistribution(uniform, [D.SigmoidTransform().inv], validate_args=False)
        return D.TransformedDistribution(standard, [D.AffineTransform(loc, scale)], validate_args=False)

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        u = _uniform(n, generator)
        return u.log() - torch.log1p(-u)


@register(BaseInfo("uniform", "Uniform box", "Uniform on a square: zero density outside, so the flow must map the data inside it.",
                   settings=(Setting("half_width", "float", 3.0, low=0.1, high=20.0, doc="the box is [-w, w]² (before learning)"),),
                   handles=LOCATION_SCALE_HANDLES))
class Uniform(LocationScale):
    """Uniform on loc ± scale per coordinate."""

    def __init__(self, learnable: bool, half_width: float = 3.0):
        super().__init__(learnable, scale=half_width)

    def family(self, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.Uniform(loc - scale, loc + scale, validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        scale = self.log_scale.exp()
        inside = ((z - self.loc).abs() <= scale).all(-1)
        density = -(2 * scale).log().sum()
        return torch.where(inside, density, torch.full_like(density, -math.inf))

    def standard_noise(self, n: int, generator: torch.Generator) -> Tensor:
        return 2 * torch.rand(n, 2, generator=generator) - 1


@register(
    BaseInfo(
        "gaussian_mixture",
        "Gaussian mixture",
        "k Gaussians with their own means, scales and weights: a base that can already be multimodal.",
        settings=(
            Setting("components", "int", 4, low=1, high=LIMITS.max_mixture_components, doc="number of Gaussians"),
            Setting("radius", "float", 2.0, low=0.0, high=10.0, doc="initial means lie on a circle of this radius"),
            Setting("scale", "float", 0.7, low=0.01, high=10, log_scale=True, doc="initial standard deviation"),
        ),
        reparameterized=False,
    )
)
class GaussianMixture(Base):
    def __init__(self, learnable: bool, components: int = 4, radius: float = 2.0, scale: float = 0.7):
        super().__init__(learnable)
        angles = torch.arange(components) * 2 * math.pi / components
        self._add("loc", radius * torch.stack([angles.cos(), angles.sin()], -1))
        self._add("log_scale", torch.full((components, 2), math.log(scale)))
        self._add("logits", torch.zeros(components))

    def distribution(self) -> D.Distribution:
        components = D.Independent(D.Normal(self.loc, self.log_scale.exp(), validate_args=False), 1, validate_args=False)
        return D.MixtureSameFamily(D.Categorical(logits=self.logits, validate_args=False), components, validate_args=False)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        probs = self.logits.detach().softmax(-1).cpu()
        k = torch.multinomial(probs, n, replacement=True, generator=generator).to(self.loc.device)
        noise = torch.randn(n, 2, generator=generator).to(self.loc.device)
        return self.loc[k] + self.log_scale.exp()[k] * noise


def make_base(name: str, settings: dict | None = None, learnable: bool = False) -> Base:
    return BASES[name](learnable, **(settings or {}))
