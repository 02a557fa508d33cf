"""Handles: the parameters of a layer or a base a person can move by hand (hand mode), declared in
its registry entry like its settings.

Example:
    >>> slope = Handle("slope", "number", "slope", low=0.01, high=10.0)
    >>> checked_move("Leaky ReLU", (slope,), {"slope": 0.5}, {"slope": 99})
    {'slope': 10.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

HandleValue = float | tuple[float, float]


@dataclass(frozen=True)
class Handle:
    """A parameter a person can move by hand while training is paused, declared in the layer's
    registry entry like its settings: a `point` of the plane, a `vector` drawn from the point named
    `origin`, or a `number` on a slider from `low` to `high`."""

    name: str
    kind: Literal["point", "vector", "number"]
    label: str
    low: float = -math.inf
    high: float = math.inf
    origin: str = ""  # a vector's tail: the point handle it is drawn from
    line_normal: str = ""  # a point drawn as the line through it normal to this vector handle (planar's line)
    mark: str = ""  # its short name on the plane (default: `name`)
    log_scale: bool = False  # a number that spans decades (a slope, a scale)
    doc: str = ""


def as_pair(t: Tensor) -> tuple[float, float]:
    """A 2-vector parameter as a handle's (x, y)."""
    return float(t[0]), float(t[1])


def softplus_inverse(y: float) -> float:
    """x with softplus(x) = y > 0 (a hand-set value for a parameter stored before a softplus)."""
    return y + math.log(-math.expm1(-y))


class HandleError(ValueError):
    """A hand-set value the layer cannot take (it would not be invertible); the message says why."""


def checked_move(title: str, declared: tuple[Handle, ...], current: dict[str, HandleValue],
                 values: dict[str, HandleValue]) -> dict[str, HandleValue]:
    """`current` with `values` moved in: names checked, numbers finite and clipped to their range,
    points and vectors finite pairs (HandleError names what was wrong)."""
    by_name = {handle.name: handle for handle in declared}
    out = dict(current)
    for name, value in values.items():
        handle = by_name.get(name)
        if handle is None:
            raise HandleError(f"{title} has no handle {name!r}; it has {', '.join(by_name) or 'none'}")
        if handle.kind == "number":
            value = float(value)
            if not math.isfinite(value):
                raise HandleError(f"{handle.label} must be a finite number, not {value!r}")
            out[name] = min(max(value, handle.low), handle.high)
        else:
            x, y = (float(v) for v in value)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise HandleError(f"{handle.label} must be a finite point, not {value!r}")
            out[name] = (x, y)
    return out


class Movable:
    """What hand mode moves (a layer, a base): `info.handles` declares the handles; the class reads
    them (`handles`) and sets them (`_set_handles`); `move` checks a hand's values in between."""

    def handles(self) -> dict[str, HandleValue]:
        """The current value of each handle the registry declares: points and vectors as (x, y)."""
        return {}

    @torch.no_grad()
    def move(self, values: dict[str, HandleValue]) -> dict[str, HandleValue]:
        """Set some handles by hand (the others keep their values) and return them all as it now has
        them: a number is clipped to its range, and a layer may keep a value where it stays
        invertible (a planar layer's u). Raises HandleError for a value it cannot take at all."""
        self._set_handles(checked_move(self.info.title, self.info.handles, self.handles(), values))
        return self.handles()

    def _set_handles(self, values: dict[str, HandleValue]) -> None:
        raise NotImplementedError(f"{self.info.title} has no handles")
