"""Limits that protect a shared server: one user cannot ask for a model or a grid that starves
everyone else. Every setting's bounds and the spec's checks read them from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_layers: int = 32
    max_hidden_width: int = 256
    max_hidden_layers: int = 4
    max_bins: int = 64
    max_mixture_components: int = 16
    max_batch_size: int = 8192
    max_steps: int = 1_000_000
    max_resolution: int = 512
    max_points: int = 100_000
    max_test_size: int = 16_384
    max_sessions: int = 40  # browser sessions per server process; more processes serve more


LIMITS = Limits()
