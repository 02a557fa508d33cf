"""Forms built from `Setting` declarations: the layer, base, target and training forms are all this.

A widget gets its label, bounds, choices and tooltip from its setting; a log-scale setting gets a
slider over a 1-2-5 (or, for integers, powers-of-two) ladder inside its bounds. Each widget edits
one field: `on_change(name, value)`. `show(values)` puts values back into the widgets, and setting a
widget to the value it already stands for asks for nothing, so a refused edit snaps back by showing
the spec again, with no re-entrancy flag.

Example:
    >>> from flowviz.core.spec import TRAINING_SETTINGS
    >>> edits = []
    >>> form = SettingsForm(TRAINING_SETTINGS, {"learning_rate": 3e-3}, lambda n, v: edits.append((n, v)),
    ...                     names=("learning_rate", "batch_size"))
    >>> form.widgets["learning_rate"].value, 1e-2 in form.widgets["learning_rate"].options
    (0.003, True)
    >>> form.widgets["batch_size"].value = 1024
    >>> edits
    [('batch_size', 1024)]
    >>> form.show({"learning_rate": 3e-3, "batch_size": 1024}); edits   # no new edit
    [('batch_size', 1024)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import panel as pn

from flowviz.core.settings import Setting


def log_ladder(setting: Setting, value: Any) -> list:
    """The slider stops of a log-scale setting: 1, 2, 5 per decade (powers of two for integers)
    inside its bounds, and `value` itself, so a preset's 3e-3 is shown as it is, not rounded."""
    low, high = setting.low, setting.high
    if setting.kind == "int":
        stops = [2**p for p in range(31) if low <= 2**p <= high]
    else:
        stops = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in (1, 2, 5)]
        stops = [float(f"{s:.6g}") for s in stops if low <= s <= high]
    return sorted(set(stops) | {value})


SIDE_BY_SIDE_CHARS = 30  # the most label characters a row of choice buttons holds in the sidebar


def setting_widget(setting: Setting, value: Any) -> pn.widgets.Widget:
    """A widget for one typed setting, labelled and bounded by it, its doc as the tooltip."""
    common = {"label": setting.title, "description": setting.doc or None}
    if setting.kind == "bool":
        return pn.widgets.Checkbox(value=value, label=setting.title)  # a checkbox has no tooltip slot
    if setting.kind == "choice":
        options = dict(zip(setting.choice_labels, setting.choices)) if setting.choice_labels else list(setting.choices)
        if setting.choice_labels and len(setting.choices) <= 3:
            # Side by side only where the labels fit the sidebar's ~300 px; long ones ran off its edge.
            stacked = sum(len(label) for label in setting.choice_labels) > SIDE_BY_SIDE_CHARS
            return pn.widgets.RadioButtonGroup(options=options, value=value, color="default",
                                               orientation="vertical" if stacked else "horizontal",
                                               sizing_mode="stretch_width", description=setting.doc or None)
        return pn.widgets.Select(options=options, value=value, **common)
    if setting.log_scale:
        return pn.widgets.DiscreteSlider(options=log_ladder(setting, value), value=value, label=setting.title)
    if setting.kind == "int":
        return pn.widgets.IntInput(value=value, start=int(setting.low), end=int(setting.high), **common)
    return pn.widgets.FloatInput(value=value, start=setting.low, end=setting.high, format="0.[00000]", **common)


def show_value(widget: pn.widgets.Widget, setting: Setting, value: Any) -> None:
    """Put `value` into `widget` (a log slider grows a stop for it: options and value change together)."""
    if widget.value == value:
        return
    if setting.log_scale:
        widget.param.update(options=log_ladder(setting, value), value=value)
    else:
        widget.value = value


class SettingsForm:
    """Widgets for a tuple of settings (or the ones `names` picks), each calling `on_change(name, value)`."""

    def __init__(self, settings: tuple[Setting, ...], values: Mapping[str, Any],
                 on_change: Callable[[str, Any], None], names: tuple[str, ...] | None = None):
        chosen = [s for s in settings if names is None or s.name in names]
        if names is not None:
            chosen.sort(key=lambda s: names.index(s.name))
        self.settings = {s.name: s for s in chosen}
        self.widgets = {s.name: setting_widget(s, values.get(s.name, s.default)) for s in chosen}
        for name, widget in self.widgets.items():
            widget.param.watch(lambda event, name=name: on_change(name, event.new), "value")
        self.panel = pn.Column(*self.widgets.values(), margin=0, sizing_mode="stretch_width")

    def show(self, values: Mapping[str, Any]) -> None:
        for name, widget in self.widgets.items():
            show_value(widget, self.settings[name], values.get(name, self.settings[name].default))

    def values(self) -> dict[str, Any]:
        return {name: widget.value for name, widget in self.widgets.items()}
