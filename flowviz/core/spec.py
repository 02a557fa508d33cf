"""The experiment spec: one typed, validated description of an experiment.

Presets, links, the UI and the CLI all read and write this one structure. `ExperimentSpec.from_dict`
accepts only what it can vouch for: unknown names, wrong types and out-of-range numbers raise a
`SpecError` that names the field (`layers[2].settings.bins`) and the allowed values. The spec holds
no device: where it runs is the caller's choice.

Example:
    >>> spec = ExperimentSpec.from_dict({"target": {"name": "moons"}, "layers": [{"type": "affine_coupling"}]})
    >>> spec.layers[0].settings["hidden"], spec.training.batch_size
    (64, 512)
    >>> ExperimentSpec.from_json(spec.to_json()) == spec
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowviz.core.bases import BASES
from flowviz.core.layers import LAYERS
from flowviz.core.limits import LIMITS
from flowviz.core.picture import decode_picture
from flowviz.core.settings import Setting, SpecError, from_settings, setting, settings_of, validate_settings
from flowviz.core.targets import TARGETS, Picture
from flowviz.core.targets.picture import UPLOADED

SPEC_VERSION = 1
MAX_SPEC_BYTES = 8 * 1024 * 1024

@dataclass(frozen=True)
class TrainingSpec:
    """How to train: each field is a `Setting`, declared once (forms, bounds and checks read it)."""

    objective: str = setting("choice", "forward_kl", choices=("forward_kl", "reverse_kl", "flow_matching"),
                             choice_labels=("forward KL (samples)", "reverse KL (energy)", "flow matching (one cnf)"),
                             label="Objective",
                             doc="forward KL: maximum likelihood on target samples; reverse KL: fit q to the target "
                             "density; flow matching: regress a continuous flow's velocity onto straight paths from "
                             "base to data points (simulation-free)")
    learning_rate: float = setting("float", 1e-3, low=1e-6, high=10.0, log_scale=True, label="Learning rate",
                                   doc="Adam step size")
    batch_size: int = setting("int", 512, low=1, high=LIMITS.max_batch_size, log_scale=True, label="Batch size",
                              doc="points per step")
    steps: int = setting("int", 2000, low=1, high=LIMITS.max_steps, doc="steps a headless run takes")
    grad_clip: float = setting("float", 0.0, low=0.0, high=1e6, label="Gradient clip (0: off)",
                               doc="clip the gradient norm to this (0: off)")
    anneal_steps: int = setting("int", 0, low=0, high=LIMITS.max_steps, label="Anneal the energy over (steps; reverse KL)",
                                doc="reverse KL: raise the energy's weight from 0.01 to 1 over this many steps (0: off)")
    pairing: str = setting("choice", "independent", choices=("independent", "optimal_transport"),
                           choice_labels=("independent", "minibatch optimal transport"),
                           label="Pairs of base and data points (flow matching)",
                           doc="flow matching: draw base and data points independently, or pair them within each "
                           "batch by an optimal assignment (straighter paths)")
    eval_every: int = setting("int", 100, low=1, high=LIMITS.max_steps, doc="steps between held-out evaluations")
    test_size: int = setting("int", 4096, low=16, high=LIMITS.max_test_size,
                             doc="held-out points (or q samples) per evaluation")


@dataclass(frozen=True)
class ViewSpec:
    """The box of the plane the views show, and the grid's points per side."""

    xmin: float = setting("float", -4.0, low=-1e3, high=1e3, doc="left edge of the view")
    xmax: float = setting("float", 4.0, low=-1e3, high=1e3, doc="right edge of the view")
    ymin: float = setting("float", -4.0, low=-1e3, high=1e3, doc="bottom edge of the view")
    ymax: float = setting("float", 4.0, low=-1e3, high=1e3, doc="top edge of the view")
    resolution: int = setting("int", 128, low=8, high=LIMITS.max_resolution, log_scale=True,
                              label="Grid resolution (paused)", doc="grid points per side")

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    def contains(self, x: float, y: float) -> bool:
        return self.xmin <= x <= self.xmax and self.ymin <= y <= self.ymax


TRAINING_SETTINGS = settings_of(TrainingSpec)
VIEW_SETTINGS = settings_of(ViewSpec)

PRESENTATION_SETTINGS = (
    Setting("projector", "bool", False, label="Projector: large type and plots", doc="large type and plots for a projector"),
    Setting("time_slices", "bool", False, label="Open continuous flows into time slices (t = 0, ¼, ½, ¾, 1)",
            doc="the strips and the ledger show a continuous flow at quarter times, not only at its end"),
    Setting("hand", "int", -1, low=-1, high=LIMITS.max_layers, label="In hand mode (-1: nothing, 0: the base, k: layer k)",
            doc="the page opens paused with the base (0) or layer k (counting from 1) in hand mode: its handles on the plane"),
)
TIME_SLICES = 4  # the parts a continuous flow opens into
MAX_HIDDEN = 32
PANEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # the UI knows which panels exist; the spec only their form

SEED = Setting("seed", "int", 0, low=0, high=2**31 - 1, label="Seed", doc="seeds initialisation, data and sampling")


@dataclass(frozen=True)
class BaseSpec:
    name: str = "standard_normal"
    learnable: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerSpec:
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True)
class TargetSpec:
    name: str = "8gaussians"
    settings: dict[str, Any] = field(default_factory=dict)
    points: tuple[tuple[float, float], ...] | None = None  # only for the "points" target
    image: str | None = None  # only for the "image" target's uploaded picture: a grey PNG in base64


@dataclass(frozen=True)
class PresentationSpec:
    """How the page looks: projector mode, continuous flows opened into time slices, and the panels a
    teacher hid (by name: the page's own list of panels, flowviz.ui.layout.PANELS, says which names
    exist)."""

    projector: bool = False
    hidden: tuple[str, ...] = ()
    time_slices: bool = False
    hand: int = -1  # what is in hand mode: -1 nothing, 0 the base, k layer k (counting from 1), as the views number depths


@dataclass(frozen=True)
class ExperimentSpec:
    title: str = "Untitled experiment"
    description: str = ""
    seed: int = 0
    base: BaseSpec = field(default_factory=BaseSpec)
    layers: tuple[LayerSpec, ...] = ()
    target: TargetSpec = field(default_factory=TargetSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    view: ViewSpec = field(default_factory=ViewSpec)
    presentation: PresentationSpec = field(default_factory=lambda: PresentationSpec())
    version: int = SPEC_VERSION

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> ExperimentSpec:
        _expect_object(data, "spec")
        _reject_unknown(data, {f for f in cls.__dataclass_fields__}, "spec")
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError("version", f"{version!r} is not supported; expected {SPEC_VERSION}")
        spec = cls(
            title=_text(data.get("title", "Untitled experiment"), "title", 200),
            description=_text(data.get("description", ""), "description", 5000),
            seed=SEED.validate(data.get("seed", 0), "seed"),
            base=_base(data.get("base", {})),
            layers=_layers(data.get("layers", [])),
            target=_target(data.get("target", {})),
            training=from_settings(TrainingSpec, data.get("training"), "training"),
            view=_view(data.get("view")),
            presentation=_presentation(data.get("presentation", {})),
        )
        _check_combination(spec)
        return spec

    @classmethod
    def from_json(cls, text: str | bytes) -> ExperimentSpec:
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError("spec", f"the file is {len(text)} bytes; at most {MAX_SPEC_BYTES} are accepted")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise SpecError("spec", f"not valid JSON ({error}); a preset is one JSON object") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentSpec:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise SpecError("spec", f"cannot read {path}: {error.strerror}") from None
        return cls.from_json(raw)

    # -- writing ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(data["layers"])
        data["presentation"]["hidden"] = list(self.presentation.hidden)
        if self.target.image is None:
            del data["target"]["image"]
        if self.target.points is None:
            del data["target"]["points"]
        else:
            data["target"]["points"] = [list(p) for p in self.target.points]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def replace(self, **changes: Any) -> ExperimentSpec:
        """A validated copy with top-level fields changed (dicts merge into training and view)."""
        data = self.to_dict()
        for key, value in changes.items():
            if key in ("training", "view") and isinstance(value, Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return ExperimentSpec.from_dict(data)


def _expect_object(value: Any, field_name: str) -> None:
    if not isinstance(value, Mapping):
        raise SpecError(field_name, f"expected an object, got {type(value).__name__}")


def _reject_unknown(data: Mapping, allowed: set[str], field_name: str) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{field_name}.{key}" if field_name != "spec" else str(key),
                            f"unknown field; allowed: {', '.join(sorted(allowed))}")


def _text(value: Any, field_name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise SpecError(field_name, f"expected text, got {value!r}")
    if len(value) > limit:
        raise SpecError(field_name, f"is {len(value)} characters long; at most {limit} are allowed")
    return value


def _name(value: Any, registry: Mapping, field_name: str) -> str:
    if not isinstance(value, str) or value not in registry:  # (a list is not hashable: check the type first)
        raise SpecError(field_name, f"{value!r} is not known; expected one of {', '.join(registry)}")
    return value


def _base(data: Any) -> BaseSpec:
    _expect_object(data, "base")
    _reject_unknown(data, {"name", "learnable", "settings"}, "base")
    name = _name(data.get("name", "standard_normal"), BASES, "base.name")
    learnable = data.get("learnable", False)
    if not isinstance(learnable, bool):
        raise SpecError("base.learnable", f"expected true or false, got {learnable!r}")
    settings = validate_settings(BASES[name].info.settings, data.get("settings"), "base.settings")
    return BaseSpec(name, learnable, settings)


def _layers(data: Any) -> tuple[LayerSpec, ...]:
    if not isinstance(data, list):
        raise SpecError("layers", f"expected a list of layers, got {type(data).__name__}")
    if len(data) > LIMITS.max_layers:
        raise SpecError("layers", f"{len(data)} layers; at most {LIMITS.max_layers} are allowed")
    out = []
    for i, item in enumerate(data):
        where = f"layers[{i}]"
        _expect_object(item, where)
        _reject_unknown(item, {"type", "settings", "enabled"}, where)
        kind = _name(item.get("type"), LAYERS, f"{where}.type")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SpecError(f"{where}.enabled", f"expected true or false, got {enabled!r}")
        out.append(LayerSpec(kind, validate_settings(LAYERS[kind].info.settings, item.get("settings"), f"{where}.settings"), enabled))
    return tuple(out)


def _target(data: Any) -> TargetSpec:
    _expect_object(data, "target")
    _reject_unknown(data, {"name", "settings", "points", "image"}, "target")
    name = _name(data.get("name", "8gaussians"), TARGETS, "target.name")
    settings = validate_settings(TARGETS[name].info.settings, data.get("settings"), "target.settings")
    points, image = data.get("points"), data.get("image")
    if name != "points" and points is not None:
        raise SpecError("target.points", f"only the 'points' target takes points, not {name!r}")
    if name == "image":
        return TargetSpec(name, settings, image=_image(image, settings))
    if image is not None:
        raise SpecError("target.image", f"only the 'image' target takes a picture, not {name!r}")
    return TargetSpec(name, settings, _points(points) if name == "points" else None)


def _image(image: Any, settings: dict[str, Any]) -> str | None:
    """The uploaded picture, checked by decoding it, and its density's mass."""
    if settings["picture"] != UPLOADED:
        if image is not None:
            raise SpecError("target.image", f"a built-in picture ({settings['picture']!r}) takes no image; "
                                            f"set target.settings.picture to {UPLOADED!r} to use this one")
        return None
    if image is None:
        raise SpecError("target.image", f"picture {UPLOADED!r} needs the picture: a greyscale PNG in base64 "
                                        "(upload a picture in the app, or pick a built-in picture)")
    try:
        Picture(**settings, grey=decode_picture(image))
    except ValueError as error:  # PictureError, or a picture without density
        raise SpecError("target.image", str(error)) from None
    return image


def _points(points: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(points, list):
        raise SpecError("target.points", "expected a list of [x, y] pairs")
    if not 2 <= len(points) <= LIMITS.max_points:
        raise SpecError("target.points", f"{len(points)} points; expected 2 to {LIMITS.max_points}")
    out = []
    for i, pair in enumerate(points):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)):
            raise SpecError(f"target.points[{i}]", f"expected a pair of finite numbers [x, y], got {pair!r}")
        out.append((float(pair[0]), float(pair[1])))
    return tuple(out)


def _presentation(data: Any) -> PresentationSpec:
    _expect_object(data, "presentation")
    _reject_unknown(data, {"projector", "hidden", "time_slices", "hand"}, "presentation")
    switches = validate_settings(PRESENTATION_SETTINGS, {k: v for k, v in data.items() if k != "hidden"}, "presentation")
    hidden = data.get("hidden", [])
    if not isinstance(hidden, list):
        raise SpecError("presentation.hidden", f"expected a list of panel names, got {type(hidden).__name__}")
    if len(hidden) > MAX_HIDDEN:
        raise SpecError("presentation.hidden", f"{len(hidden)} names; at most {MAX_HIDDEN} are allowed")
    for i, name in enumerate(hidden):
        if not isinstance(name, str) or not PANEL_NAME.match(name):
            raise SpecError(f"presentation.hidden[{i}]", f"{name!r} is not a panel name (lower-case letters, digits, _)")
    return PresentationSpec(switches["projector"], tuple(dict.fromkeys(hidden)), switches["time_slices"],
                            switches["hand"])


def _view(data: Any) -> ViewSpec:
    view = from_settings(ViewSpec, data, "view")
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if getattr(view, low) >= getattr(view, high):
            raise SpecError(f"view.{high}", f"must be greater than view.{low} ({getattr(view, low):g})")
    return view


def _check_combination(spec: ExperimentSpec) -> None:
    target = TARGETS[spec.target.name].info
    if spec.presentation.hand >= 0:
        _check_hand(spec)
    if spec.training.objective == "flow_matching":
        _check_flow_matching(spec)
    if spec.training.objective == "reverse_kl":
        if not target.smooth_density:
            raise SpecError(
                "training.objective",
                f"reverse KL needs a target density that is finite everywhere; {spec.target.name!r} has none. "
                f"Use forward_kl, or one of: {', '.join(n for n, t in TARGETS.items() if t.info.smooth_density)}",
            )
        base = BASES[spec.base.name].info
        if spec.base.learnable and not base.reparameterized:
            raise SpecError(
                "base.learnable",
                f"a learnable {base.title} base cannot be trained by reverse KL (its samples carry no gradient); "
                "set learnable to false or use forward_kl",
            )


def _check_hand(spec: ExperimentSpec) -> None:
    position = spec.presentation.hand
    field_name = "presentation.hand"
    if position == 0:
        base = BASES[spec.base.name].info
        if not base.handles:
            raise SpecError(field_name, f"the {base.title} base has no handles to move by hand; a location-scale "
                                        "base (Gaussian, Student-t, Laplace, logistic, uniform) has")
        if not spec.base.learnable:
            raise SpecError(field_name, "a fixed base is the one its settings describe: make it learnable "
                                        "(base.learnable) to move it by hand")
        return
    if position > len(spec.layers):
        raise SpecError(field_name, f"{position} names no layer: the stack has {len(spec.layers)}")
    layer = spec.layers[position - 1]
    with_handles = ", ".join(name for name, entry in LAYERS.items() if entry.info.handles)
    if not LAYERS[layer.type].info.handles:
        raise SpecError(field_name, f"layer {position} ({layer.type}) has no handles to move by hand; "
                                    f"these layers have: {with_handles}")
    if not layer.enabled:
        raise SpecError(field_name, f"layer {position} is switched off; switch it on to move it by hand")


def _check_flow_matching(spec: ExperimentSpec) -> None:
    """Flow matching trains one velocity field on straight paths from base points to data points: the
    enabled stack must be one continuous flow, and nothing else may need training."""
    enabled = [layer.type for layer in spec.layers if layer.enabled]
    if enabled != ["cnf"]:
        found = ", ".join(enabled) if enabled else "no layer"
        raise SpecError(
            "training.objective",
            f"flow matching trains the velocity of one continuous flow, so the enabled stack must be exactly one "
            f"cnf layer; it has {found}. Switch the other layers off, or train with forward_kl",
        )
    if spec.base.learnable:
        raise SpecError("base.learnable", "flow matching does not train the base (its points are the paths' "
                                          "starts); set learnable to false or train with forward_kl")
