"""Small conditioner networks: a plain MLP for coupling layers and MADE for autoregressive ones."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from flowviz.core.limits import LIMITS
from flowviz.core.settings import Setting

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU}

HIDDEN_SETTINGS = (
    Setting("hidden", "int", 64, low=4, high=LIMITS.max_hidden_width, doc="units per hidden layer"),
    Setting("depth", "int", 2, low=1, high=LIMITS.max_hidden_layers, doc="hidden layers"),
    Setting("activation", "choice", "relu", choices=tuple(ACTIVATIONS), doc="hidden activation"),
)


class ScalarInputLinear(nn.Linear):
    """nn.Linear for one input feature as a broadcast multiply-add. Same parameters; BLAS treats
    an (N, 1) x (1, H) product as a full matrix product and takes ~3x longer (every 2-D coupling
    conditioner starts with one)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, x, self.weight.T)


def _activation(name: str) -> nn.Module:
    # In place, ReLU rewrites the Linear output it follows instead of allocating another
    # (N, hidden) tensor: ~10% of a grid evaluation. Autograd allows it: ReLU's backward needs only
    # its output, and Linear's backward never needs its own.
    return nn.ReLU(inplace=True) if name == "relu" else ACTIVATIONS[name]()


def mlp(inputs: int, outputs: int, hidden: int, depth: int, activation: str) -> nn.Sequential:
    """An MLP whose last layer starts at zero, so a fresh flow layer starts as the identity."""
    sizes = [inputs] + [hidden] * depth
    modules: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        modules += [ScalarInputLinear(a, b) if a == 1 else nn.Linear(a, b), _activation(activation)]
    last = nn.Linear(sizes[-1], outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules, last)


class MaskedLinear(nn.Linear):
    def __init__(self, inputs: int, outputs: int, mask: Tensor):
        super().__init__(inputs, outputs)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al. 2015, "MADE"): output i sees only inputs < i.

    Returns `params_per_dim` values for each of the `dims` inputs, shape (N, dims, params_per_dim).
    """

    def __init__(self, dims: int, params_per_dim: int, hidden: int, depth: int, activation: str):
        super().__init__()
        self.dims, self.params_per_dim = dims, params_per_dim
        in_degrees = torch.arange(1, dims + 1)
        hidden_degrees = torch.arange(hidden) % max(dims - 1, 1) + 1
        out_degrees = in_degrees.repeat_interleave(params_per_dim)
        layers: list[nn.Module] = []
        previous = in_degrees
        for _ in range(depth):
            mask = (hidden_degrees[:, None] >= previous[None, :]).float()
            layers += [MaskedLinear(len(previous), hidden, mask), _activation(activation)]
            previous = hidden_degrees
        last = MaskedLinear(len(previous), len(out_degrees), (out_degrees[:, None] > previous[None, :]).float())
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1, self.dims, self.params_per_dim)
