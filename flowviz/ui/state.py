"""One session's state: the experiment, its live model, and everything the page shows about it.

`ExperimentState` is the only object the views write to and read from. An edit from any control is
a proposal: `propose` validates the candidate spec, hands a valid one to the `LiveSession` (which
keeps the weights the edit did not touch) and sets `spec`; a refused one sets `message` and
re-announces the unchanged `spec`, so every control that watches it snaps back. Nothing here builds
a widget.

Example:
    >>> state = ExperimentState(ExperimentSpec.load(preset_path("realnvp-moons")))
    >>> state.set_training("batch_size", 64), state.spec.training.batch_size
    (True, 64)
    >>> state.set_training("grad_clip", -1.0), state.message[:18], state.spec.training.grad_clip
    (False, 'training.grad_clip', 0.0)
    >>> state.step(); state.live.step, state.frame.step
    (1, 1)
    >>> state.close()
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import param

from flowviz.core.layers import LAYERS
from flowviz.core.layers.base import HandleError
from flowviz.core.link import read_link
from flowviz.core.picture import PictureError, encode_picture, is_picture, read_picture
from flowviz.core.pointfile import PointsFileError, parse_points
from flowviz.core.presets import DEFAULT_PRESET, preset_path
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec, LayerSpec
from flowviz.core.targets import TARGETS
from flowviz.core.targets.picture import UPLOADED
from flowviz.ui.layout import unknown_panels
from flowviz.ui.live import ComputeGate, Frame, LiveSession, rate_per_second

ANIMATION_EVERY = 4  # while training, the animation and the ledger redraw on every 4th frame
SLOW_MOTION = 5  # at this many steps per frame or fewer, each frame explains its step
BRUSH_POINTS = {"tap": 24, "drag": 6}  # points sprayed per click, and per drag event
BRUSH_RADIUS = 0.025  # of the view's width
MAX_DRAWN = 20_000


def open_link(value: str | None, preset: str | Path = DEFAULT_PRESET) -> tuple[ExperimentSpec, str]:
    """A shared link's experiment (`preset`'s without one), and what could not be used of it (empty
    when it was sound): the wrong fields fall back to their defaults, hidden panels this page lacks
    are dropped."""
    if not value:
        return ExperimentSpec.load(preset_path(preset)), ""
    spec, ignored = read_link(value)
    unknown = unknown_panels(spec.presentation.hidden)
    if unknown:
        ignored += unknown
        kept = [name for name in spec.presentation.hidden if not unknown_panels((name,))]
        spec = spec.replace(presentation={**spec.to_dict()["presentation"], "hidden": kept})
    if not ignored:
        return spec, ""
    shown = "; ".join(ignored[:4]) + (f"; and {len(ignored) - 4} more" if len(ignored) > 4 else "")
    return spec, f"Parts of this link could not be used, so defaults stand in for them: {shown}."


class ExperimentState(param.Parameterized):
    """Everything one browser session's views show, and the only way to change it."""

    spec = param.ClassSelector(class_=ExperimentSpec, doc="the current, valid experiment")
    layer_ids = param.List(default=[], doc="one id per layer: an id names that layer's trained weights")
    device = param.String(default="cpu")
    playing = param.Boolean(default=False, doc="training runs (the Play toggle)")
    steps_per_frame = param.Integer(default=0, bounds=(0, None), doc="0: as fast as it goes; n: slow motion")
    frame = param.Parameter(default=None, doc="the newest Frame shown")
    explain = param.Boolean(default=False, doc="explain each step (after Step, or in slow motion)")
    followed = param.Parameter(default=None, doc="(depth, (x, y)) of the point the ledger follows, or None")
    ledger = param.Parameter(default=None, doc="the followed point's Ledger under the current weights")
    drawing = param.Boolean(default=False, doc="a click or drag on the target sprays points")
    drawn = param.List(default=[], doc="points drawn by hand, (x, y), not yet the target")
    target_source = param.String(default="", doc="where the uploaded points or picture of the target came from")
    overlay = param.Boolean(default=False, doc="show the target's samples over the densities")
    cumulative = param.Boolean(default=False, doc="the ln|det J| strip shows the sum over layers up to k")
    message = param.String(default="", doc="what was wrong with the last thing asked, and what to do")
    unseen = param.List(default=[], item_type=str,
                        doc="frame panels the page has out of view (scrolled away or hidden): drawn once seen")

    def __init__(self, spec: ExperimentSpec | None = None, gate: ComputeGate | None = None,
                 exact_in_background: bool = False, **params):
        spec = spec if spec is not None else ExperimentSpec.load(preset_path(DEFAULT_PRESET))
        self.live = LiveSession(spec, gate=gate)
        super().__init__(spec=spec, layer_ids=list(self.live.layer_ids), **params)
        self.frames_shown = 0
        self.exact_in_background = exact_in_background  # a server session: frames come from the rendering thread
        self._push_times: deque[float] = deque(maxlen=60)
        self._brush = np.random.default_rng(spec.seed)
        self._hand_undo: dict[int | str, dict] = {}  # layer id or "base" -> its weights before the hand first moved it
        if exact_in_background:  # a new page: coarse views at once, never blank; the exact ones follow
            self.show(self.live.preview())
            self.live.request_exact()
        else:
            self.render_now()

    # -- proposing edits -------------------------------------------------------------------------
    def propose(self, data: dict[str, Any], layer_ids: list[int] | None = None, device: str | None = None) -> bool:
        """Validate and apply a candidate spec (as a dict); on error say why and re-announce `spec`."""
        layer_ids = list(self.layer_ids) if layer_ids is None else list(layer_ids)
        try:
            spec = ExperimentSpec.from_dict(data)
            problems = unknown_panels(spec.presentation.hidden)
            if problems:
                raise SpecError(*problems[0].split(": ", 1))
            if spec == self.spec and layer_ids == self.layer_ids and device in (None, self.device):
                return True
            self.live.apply(spec, layer_ids, device)
        except (SpecError, ValueError) as error:
            self.say(str(error))
            self.param.trigger("spec")  # the controls show the spec that stands
            return False
        self.message = ""
        self.param.update(spec=spec, layer_ids=layer_ids, device=self.live.device)
        self._refresh_ledger()
        if not self.playing:
            self.render_now()
        return True

    def _candidate(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def set_training(self, name: str, value: Any) -> bool:
        data = self._candidate()
        data["training"][name] = value
        return self.propose(data)

    def set_view(self, name: str, value: Any) -> bool:
        data = self._candidate()
        data["view"][name] = value
        return self.propose(data)

    def set_seed(self, value: int) -> bool:
        return self.propose({**self._candidate(), "seed": value})

    def set_device(self, device: str) -> bool:
        return self.propose(self._candidate(), device=device)

    def set_target(self, name: str) -> bool:
        if not name or name == self.spec.target.name:
            return True
        data = self._candidate()
        data["target"] = {"name": name}
        if name in TARGETS and not TARGETS[name].info.smooth_density and data["training"]["objective"] == "reverse_kl":
            data["training"]["objective"] = "forward_kl"  # the only objective this target supports
        return self.propose(data)

    def set_target_setting(self, name: str, value: Any) -> bool:
        data = self._candidate()
        data["target"]["settings"][name] = value
        if name == "picture" and value != UPLOADED:
            data["target"].pop("image", None)  # a built-in picture replaces the uploaded one
        return self.propose(data)

    def set_base(self, name: str | None = None, learnable: bool | None = None) -> bool:
        data = self._candidate()
        if name is not None and name != self.spec.base.name:
            data["base"] = {"name": name, "learnable": self.spec.base.learnable, "settings": {}}
        if learnable is not None:
            data["base"]["learnable"] = learnable
        if self.held_part() == "base":  # a new or fixed base ends hand mode on the old one
            base = data["base"]
            if base["name"] != self.spec.base.name or not base["learnable"]:
                data["presentation"]["hand"] = -1
                self._hand_undo.pop("base", None)
        return self.propose(data)

    def set_base_setting(self, name: str, value: Any) -> bool:
        data = self._candidate()
        data["base"]["settings"][name] = value
        return self.propose(data)

    def set_layers(self, layers: tuple[LayerSpec, ...], ids: list[int]) -> bool:
        data = self._candidate()
        data["layers"] = [{"type": layer.type, "settings": layer.settings, "enabled": layer.enabled} for layer in layers]
        held = self.held_part()
        if isinstance(held, int):  # hand mode follows its layer through the edit, or ends with it
            keep = held in ids and LAYERS[layers[ids.index(held)].type].info.handles and layers[ids.index(held)].enabled
            data["presentation"]["hand"] = ids.index(held) + 1 if keep else -1
        return self.propose(data, layer_ids=ids)

    def set_presentation(self, projector: bool | None = None, hidden: list[str] | None = None,
                         time_slices: bool | None = None) -> bool:
        data = self._candidate()
        if projector is not None:
            data["presentation"]["projector"] = projector
        if time_slices is not None:
            data["presentation"]["time_slices"] = time_slices
        if hidden is not None:
            data["presentation"]["hidden"] = list(hidden)
        return self.propose(data)

    def say(self, text: str) -> None:
        self.message = text

    # -- by hand -----------------------------------------------------------------------------------
    def held_part(self) -> int | str | None:
        """What is in hand mode: a layer's id, "base", or None."""
        position = self.spec.presentation.hand
        return None if position < 0 else "base" if position == 0 else self.layer_ids[position - 1]

    def hold(self, part: int | str | None) -> bool:
        """Hand mode for the layer with this id, or "base" (None: leave it): training pauses, and its
        handles can be moved (`move_hand`) until another part is taken or Done."""
        self.playing = False
        if part is not None and part != "base" and part not in self.layer_ids:
            return False
        if part is None:
            self._hand_undo = {}
        data = self._candidate()
        data["presentation"]["hand"] = -1 if part is None else 0 if part == "base" else self.layer_ids.index(part) + 1
        return self.propose(data)

    def move_hand(self, values: dict[str, Any], final: bool = False) -> bool:
        """Move handles of the part in hand mode; every view follows, coarse while a hand drags and
        exact once it lets go (`final`). Training, when played again, starts from here."""
        held = self.held_part()
        if held is None:
            return False
        self.playing = False
        if values:
            self._hand_undo.setdefault(held, self.live.part_state(held))
            try:
                self.live.move(held, values)
            except HandleError as error:
                self.say(f"{error} It is as it was.")
                return False
            self.message = ""
            self._refresh_ledger()
        if final:
            self.render_now(coarse_first=False)
        elif self.exact_in_background:
            self.live.request_preview()  # a server session: the rendering thread draws it, coarse
        else:
            self.show(self.live.preview())
        return True

    def undo_hand(self) -> bool:
        """Put back the values the part in hand mode had before the hand first moved it."""
        held = self.held_part()
        saved = self._hand_undo.pop(held, None) if held is not None else None
        if saved is None:
            return False
        self.live.restore_part(held, saved)
        self._refresh_ledger()
        self.render_now()
        return True

    # -- whole experiments: presets, files, points -------------------------------------------------
    def load(self, spec: ExperimentSpec) -> None:
        """Replace the whole experiment (a preset, a file, a link): untrained, from its seed."""
        problems = unknown_panels(spec.presentation.hidden)
        if problems:
            self.say(f"That experiment was not loaded ({problems[0]}). The current experiment is unchanged.")
            return
        self.playing = False
        self._hand_undo = {}
        self.live.load(spec)
        self.param.update(spec=spec, layer_ids=list(self.live.layer_ids), explain=False, followed=None,
                          ledger=None, target_source="", message="")
        self.render_now()

    def open_preset_file(self, content: bytes) -> None:
        try:
            spec = ExperimentSpec.from_json(content)
        except SpecError as error:
            self.say(f"That preset file was not loaded ({error}). The current experiment is unchanged.")
            return
        self.load(spec)

    def refused(self, error: str, kept: str) -> None:
        """A file the browser refused before sending it (too large)."""
        if error:
            self.say(f"{error}. Nothing was loaded; {kept} is unchanged.")

    def upload(self, content: bytes, name: str) -> None:
        """A file from the target's upload button: a picture (PNG, JPEG) or points (anything else)."""
        if is_picture(content, name):
            self.upload_picture(content, name)
        else:
            self.upload_points(content, name)

    def upload_picture(self, content: bytes, name: str) -> None:
        """A picture becomes the target's density (the `image` target, 'uploaded'), shrunk to at most
        128 pixels a side so that the link and a downloaded preset carry it."""
        try:
            grey = read_picture(content, name)
        except PictureError as error:
            self.say(f"{error} The current target is unchanged.")
            return
        data = self._candidate()
        settings = dict(data["target"]["settings"]) if data["target"]["name"] == "image" else {}
        data["target"] = {"name": "image", "settings": {**settings, "picture": UPLOADED}, "image": encode_picture(grey)}
        if data["training"]["objective"] == "reverse_kl":  # a picture has edges: it trains on samples
            data["training"]["objective"] = "forward_kl"
        rows, cols = grey.shape
        self._propose_target(data, f"{name or 'your picture'}, shrunk to {cols}×{rows} pixels" if name else "")

    def upload_points(self, content: bytes, name: str) -> None:
        try:
            points = parse_points(content, name)
        except PointsFileError as error:
            self.say(f"{name or 'The file'} was not loaded: {error} The current target is unchanged.")
            return
        source = f"{len(points):,} points from {name}" if name else f"{len(points):,} points"
        settings = self.spec.target.settings if self.spec.target.name == "points" else {}
        self._train_on_points(points.tolist(), settings, source)

    def _train_on_points(self, points: list, settings: dict, source: str) -> bool:
        data = self._candidate()
        data["target"] = {"name": "points", "settings": settings, "points": points}
        if data["training"]["objective"] == "reverse_kl":  # points have no energy; the others train on samples
            data["training"]["objective"] = "forward_kl"
        return self._propose_target(data, source)

    def _propose_target(self, data: dict[str, Any], source: str) -> bool:
        previous, self.target_source = self.target_source, source
        if not self.propose(data):
            self.target_source = previous
            return False
        return True

    def restore(self, content: bytes) -> bool:
        """Carry on from a training state this browser kept (core.checkpoint.session_bytes) of this
        experiment: the step count, the loss curve and the weights come back as they were. A damaged or
        foreign one is refused with the reason, and nothing changes."""
        self.playing = False
        try:
            self.live.restore(content)
        except ValueError as error:
            self.say(f"The training kept in this browser was not restored: {error}. Nothing changed.")
            return False
        self._hand_undo = {}
        self.param.update(layer_ids=list(self.live.layer_ids), explain=False, message="")
        self._refresh_ledger()
        self.render_now()
        return True

    # -- training ----------------------------------------------------------------------------------
    @param.depends("playing", watch=True)
    def _play_or_pause(self) -> None:
        if self.playing:
            self.live.steps_per_frame = self.steps_per_frame
            self.live.play()
        else:
            self.live.pause()
            self.render_now(coarse_first=False)  # the last live frame stands until the exact one comes

    @param.depends("unseen", watch=True)
    def _tell_live(self) -> None:
        self.live.unseen = frozenset(self.unseen)

    @param.depends("steps_per_frame", watch=True)
    def _speed(self) -> None:
        self.live.steps_per_frame = self.steps_per_frame

    def step(self) -> None:
        """One training step, shown and explained."""
        self.playing = False
        if not self.live.step_once():
            self.say(self.live.error or "")
        self.explain = True
        self.render_now()

    def reset(self) -> None:
        """Back to the spec's untrained state."""
        self.playing = False
        self._hand_undo = {}
        self.live.reset()
        self.param.update(explain=False, message="")
        self.render_now()

    def tick(self, take: bool = True) -> bool:
        """Show the newest frame, if there is one and `take` (the page's periodic callback calls this,
        with take=False while the page has not yet painted the last one); True if one was shown."""
        if self.live.error and self.playing:
            self.say(self.live.error)
            self.playing = False
        frame = self.live.take_frame() if take else None
        if frame is not None:
            self.show(frame)
        return frame is not None

    def render_now(self, coarse_first: bool = True) -> None:
        """Show the current model: at once and exact outside a server. In a server session the
        rendering thread computes it, a coarse preview first unless `coarse_first` is False, and the
        page shows each as it comes: the event loop, which every session shares, runs no torch."""
        if self.exact_in_background:
            self.live.request_exact(preview=coarse_first)
        else:
            self.show(self.live.render())
            self.live.take_frame()

    def show(self, frame: Frame) -> None:
        self.frames_shown += 1
        self._push_times.append(time.perf_counter())
        if self.followed is not None and (not self.playing or self.frames_shown % ANIMATION_EVERY == 0):
            self._refresh_ledger()
        self.frame = frame

    def frames_per_second(self) -> float:
        """Frames this page received per second (what the viewer sees, not what was rendered)."""
        return rate_per_second(self._push_times)

    def explains(self, frame: Frame) -> bool:
        """Whether the page explains `frame`'s step: after Step, and in slow motion while playing."""
        slow = 0 < self.steps_per_frame <= SLOW_MOTION
        return frame.step > 0 and ((self.playing and slow) or (not self.playing and self.explain))

    def kl_label(self) -> str:
        if not TARGETS[self.spec.target.name].info.exact_density:
            return ""
        return "true KL(q‖p)" if self.spec.training.objective == "reverse_kl" else "true KL(p‖q)"

    # -- following a point -------------------------------------------------------------------------
    def follow(self, depth: int, point: tuple[float, float]) -> None:
        """Follow `point` of depth `depth` (0: the base) through the stack, in the ledger."""
        self.followed = (int(depth), (float(point[0]), float(point[1])))
        self._refresh_ledger()

    def follow_output(self, x: float, y: float) -> None:
        self.follow(self.live.depths(), (x, y))

    def unfollow(self) -> None:
        self.param.update(followed=None, ledger=None)

    def _refresh_ledger(self) -> None:
        if self.followed is not None:
            depth, point = self.followed
            self.ledger = self.live.follow(point, depth)

    # -- drawing a target --------------------------------------------------------------------------
    def spray(self, x: float, y: float, gesture: str) -> None:
        """A click ("tap") or a drag event on the target while drawing: spray points around (x, y)."""
        if len(self.drawn) >= MAX_DRAWN:
            return
        view = self.spec.view
        sprayed = self._brush.normal((x, y), BRUSH_RADIUS * view.width, size=(BRUSH_POINTS[gesture], 2))
        inside = [(float(px), float(py)) for px, py in sprayed if view.contains(px, py)]
        self.drawn = self.drawn + inside

    def clear_drawing(self) -> None:
        self.drawn = []

    def use_drawing(self) -> None:
        """Train on the drawn points: the view's coordinates as they are, forward KL."""
        if len(self.drawn) < 2:
            self.say("Draw some points first: switch on ✎ Draw, then click or drag on the target.")
            return
        if self._train_on_points([list(p) for p in self.drawn], {"standardize": False},
                                 f"{len(self.drawn):,} points drawn by hand"):
            self.param.update(drawing=False, drawn=[])

    # -- the session -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop this session's threads (idempotent); a closed session is not playing."""
        self.live.close()
        with param.parameterized.discard_events(self):
            self.playing = False
