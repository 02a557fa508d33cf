"""Typed settings: one declaration per knob, read by the spec validator, the UI forms and the docs.

A `Setting` names a value, its type, its default and its bounds. `validate_settings` checks a mapping
of user values against a tuple of settings and says, for every mistake, which field was wrong and
what is allowed.

Example:
    >>> bins = Setting("bins", "int", 8, low=2, high=64, doc="spline bins")
    >>> validate_settings((bins,), {"bins": 16}, "layers[0].settings")
    {'bins': 16}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

SettingKind = Literal["int", "float", "bool", "choice"]


class SpecError(ValueError):
    """A configuration value is wrong. The message names the field and what is allowed."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Setting:
    """One typed, bounded setting of a layer, a base, a target or the training loop."""

    name: str
    kind: SettingKind
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    doc: str = ""
    log_scale: bool = False  # a hint for sliders: learning rates and the like span decades
    label: str = ""  # what a form calls it (default: the name, with spaces)
    choice_labels: tuple[str, ...] = ()  # what a form calls each choice (default: the choice itself)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} from {self.low:g} to {self.high:g}"

    def validate(self, value: Any, field: str) -> Any:
        """Return `value` checked and converted, or raise SpecError naming `field`."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise SpecError(field, f"expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise SpecError(field, f"{value!r} is not allowed; expected {self.allowed()}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(field, f"expected {self.allowed()}, got {value!r}")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise SpecError(field, f"expected {self.allowed()}, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(field, f"expected {self.allowed()}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise SpecError(field, f"{value!r} is out of range; expected {self.allowed()}")
        return value


def validate_settings(
    declared: tuple[Setting, ...], given: Mapping[str, Any] | None, field: str
) -> dict[str, Any]:
    """Check `given` against `declared`, fill in defaults, and reject unknown names."""
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise SpecError(field, f"expected an object of settings, got {given!r}")
    by_name = {s.name: s for s in declared}
    for key in given:
        if key not in by_name:
            allowed = ", ".join(by_name) or "no settings"
            raise SpecError(f"{field}.{key}", f"unknown setting; allowed: {allowed}")
    return {
        s.name: s.validate(given[s.name], f"{field}.{s.name}") if s.name in given else s.default
        for s in declared
    }


def setting(kind: SettingKind, default: Any, **options: Any) -> Any:
    """A dataclass field declared as a `Setting`, named after the field: one declaration gives the
    typed attribute, its default, its bounds and its form.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Knobs:
        ...     rate: float = setting("float", 0.5, low=0.0, high=1.0)
        >>> settings_of(Knobs)[0].allowed()
        'a number from 0 to 1'
        >>> from_settings(Knobs, {"rate": 0.25}, "knobs")
        Knobs(rate=0.25)
    """
    return field(default=default, metadata={"setting": {"kind": kind, "default": default, **options}})


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The `Setting`s declared by a dataclass's `setting(...)` fields, in field order."""
    return tuple(Setting(f.name, **f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata)


def from_settings(cls: type, given: Mapping[str, Any] | None, field_name: str) -> Any:
    """An instance of a `setting(...)` dataclass from user values, validated like `validate_settings`."""
    return cls(**validate_settings(settings_of(cls), given, field_name))
