"""The explorer page: one `Explorer` per browser session.

The experiment spec is the single source of truth. Every control edits a candidate spec; a valid one
goes to the `LiveSession` (which keeps the weights the edit did not touch) and into the page's link;
an invalid one is refused with a message and the controls snap back, so nothing is lost.

Example:
    >>> explorer = Explorer(ExperimentSpec.load("presets/realnvp-moons.json"))
    >>> explorer.stack.act({"action": "add", "type": "planar"})
    >>> len(explorer.spec.layers)
    9
    >>> explorer.close()
"""

from __future__ import annotations

import io
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param
from panel.io.callbacks import PeriodicCallback
from bokeh.events import Pan, PanStart, Tap
from bokeh.models import ColumnDataSource

from flowviz.core.bases import BASES
from flowviz.core.checkpoint import model_bytes
from flowviz.core.devices import available_devices
from flowviz.core.layers import LAYERS
from flowviz.core.link import LINK_PARAMETER, MAX_LINK_CHARS, read_link, spec_to_link
from flowviz.core.pointfile import MAX_UPLOAD_BYTES, PointsFileError, parse_points
from flowviz.core.settings import SpecError
from flowviz.core.spec import MAX_SPEC_BYTES, PANELS, ExperimentSpec
from flowviz.core.targets import TARGETS
from flowviz.figures import TrainingRecorder, depth_gif, samples_csv, views_png
from flowviz.ui.live import ComputeGate, LiveSession, rate_per_second
from flowviz.ui.pickers import FileUpload, SettingsForm, TargetPicker, target_options
from flowviz.ui.stack import LayerStack
from flowviz.ui.teaching import LEDGER_CSS, formula_tex, ledger_html, step_explanation
from flowviz.ui.views import DepthAnimation, DepthStrip, LossChart, TargetAndModel, update_images

PRESETS = Path(__file__).resolve().parent.parent.parent / "presets"
DEFAULT_PRESET = "realnvp-moons"
TICK_MS = 40  # how often the page looks for a new frame; frames themselves come at most MAX_FPS
ANIMATION_STEPS = 24  # animation ticks per layer
ANIMATION_EVERY = 4  # while training, redraw the animation on every 4th frame
SPEEDS = {"as fast as it goes": 0, "1 step per frame": 1, "2 steps per frame": 2, "5 steps per frame": 5,
          "20 steps per frame": 20, "100 steps per frame": 100}
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 1e-2, 3e-2, 1e-1]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
RESOLUTIONS = [32, 48, 64, 96, 128, 192, 256]
UPLOAD_TYPES = ".csv,.tsv,.txt,.dat,.npy,.json"
SLOW_MOTION = 5  # at this many steps per frame or fewer, each frame explains its step
PANEL_LABELS = {"experiment": "Experiment", "target": "Target", "base": "Base", "training": "Training",
                "layers": "Layer editor", "overview": "Target, model, animation, loss", "density": "Density strip",
                "log_det": "ln|det J| strip", "samples": "Sample strip", "ledger": "Ledger and formula"}
SIDEBAR_PANELS = ("experiment", "target", "base", "training")
BRUSH_POINTS = {"tap": 24, "drag": 6}  # points sprayed per click, and per drag event
BRUSH_RADIUS = 0.025  # of the view's width
MAX_DRAWN = 20_000
LEDGER_HINT = ("<p><b>Follow a point.</b> Click any panel of the density, ln|det J| or sample strips, or the "
               "target or model, and that point is followed through every layer: where it starts in the base, "
               "every layer's ln|det J<sub>k</sub>|, and ln q<sub>K</sub> summed up beside its direct value.</p>")


def preset_files() -> dict[str, Path]:
    """Preset title -> file, for the picker, in file-name order with numbers as numbers (k2, k8, k32)."""
    found = {}
    for path in sorted(PRESETS.glob("*.json"), key=_natural):
        try:
            found[ExperimentSpec.load(path).title] = path
        except SpecError:
            continue  # a broken preset file is the CLI's and the tests' to report, not the page's
    return found


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def _nearest(options: list, value):
    return min(options, key=lambda option: abs(option - value))


class Explorer(pn.viewable.Viewer):
    """Everything one browser session sees and does."""

    spec = param.ClassSelector(class_=ExperimentSpec, doc="the current, valid experiment")
    playing = param.Boolean(default=False)
    message = param.String(default="")

    def __init__(self, spec: ExperimentSpec | None = None, gate: ComputeGate | None = None, **params):
        if spec is None:
            spec = ExperimentSpec.load(PRESETS / f"{DEFAULT_PRESET}.json")
        super().__init__(spec=spec, **params)
        self._syncing = False
        self._last_push = time.perf_counter()
        self._push_times: deque[float] = deque(maxlen=60)
        self._latest = None
        self._frames_drawn = 0
        self._points_source = ""
        self._followed: tuple[int, tuple[float, float]] | None = None  # (depth, point) of the ledger
        self._drawn: list[tuple[float, float]] = []
        self._brush = np.random.default_rng(spec.seed)
        self._new_recording(spec)
        self.live = LiveSession(spec, gate=gate)
        self.stack = LayerStack(sizing_mode="stretch_width")
        self.stack.set_layers(spec.layers)
        self._build_controls()
        self._build_views()
        self._build_teaching()
        self._build_layout()
        self._sync_controls()
        self._show_target()
        self._show_presentation()
        self._show_formula(None)
        self._render_now()
        self._callback = None

    # -- controls ----------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", margin=(0, 5))
        self.presets = preset_files()
        self.preset_select = pn.widgets.Select(label="Preset", options=["(choose a preset)"] + list(self.presets))
        self.preset_select.param.watch(self._on_preset, "value")
        self.preset_upload = FileUpload(accept=".json", max_bytes=MAX_SPEC_BYTES, label="Open a preset file",
                                        sizing_mode="stretch_width")
        self.preset_upload.param.watch(self._on_preset_upload, "value")
        self.preset_upload.param.watch(lambda e: self._refused(e.new, "the current experiment"), "error")
        self.download = pn.widgets.FileDownload(callback=self._preset_file, filename="flowviz-experiment.json",
                                                label="Download this experiment", color="default",
                                                sizing_mode="stretch_width")
        self.link = pn.widgets.TextInput(label="Link to this experiment (seed included)", sizing_mode="stretch_width")
        export = dict(color="default", sizing_mode="stretch_width", margin=(2, 5))
        self.exports = [
            pn.widgets.FileDownload(callback=self._views_png, filename="flowviz-views.png",
                                    label="PNG of the per-layer views", **export),
            pn.widgets.FileDownload(callback=self._depth_gif, filename="flowviz-through-depth.gif",
                                    label="GIF: the flow through depth", **export),
            pn.widgets.FileDownload(callback=self._training_gif, filename="flowviz-training.gif",
                                    label="GIF: training so far", **export),
            pn.widgets.FileDownload(callback=self._model_file, filename="flowviz-model.pt",
                                    label="Trained model (weights + spec, .pt)", **export),
            pn.widgets.FileDownload(callback=self._samples_file, filename="flowviz-samples.csv",
                                    label="2000 samples of the model (CSV)", **export),
        ]

        self.target_picker = TargetPicker(options=target_options(), sizing_mode="stretch_width")
        self.target_picker.param.watch(lambda e: self._edit_target(e.new), "value")
        self.points_upload = FileUpload(accept=UPLOAD_TYPES, max_bytes=MAX_UPLOAD_BYTES, label="Upload points",
                                        sizing_mode="stretch_width")
        self.points_upload.param.watch(self._on_points_upload, "value")
        self.points_upload.param.watch(lambda e: self._refused(e.new, "the current target"), "error")
        self.points_note = pn.pane.Markdown("", margin=(0, 5), styles={"font-size": "13px"})
        self.target_form_holder = pn.Column(margin=0)

        self.base_select = pn.widgets.Select(label="Base distribution", options={b.info.title: n for n, b in BASES.items()})
        self.base_select.param.watch(lambda e: self._edit_base(), "value")
        self.base_learnable = pn.widgets.Checkbox(label="learn the base's parameters too")
        self.base_learnable.param.watch(lambda e: self._edit_base(), "value")
        self.base_form_holder = pn.Column(margin=0)

        self.objective = pn.widgets.RadioButtonGroup(
            options={"forward KL (samples)": "forward_kl", "reverse KL (energy)": "reverse_kl"},
            color="default", sizing_mode="stretch_width")
        self.learning_rate = pn.widgets.DiscreteSlider(label="Learning rate", options=LEARNING_RATES)
        self.batch_size = pn.widgets.DiscreteSlider(label="Batch size", options=BATCH_SIZES)
        self.grad_clip = pn.widgets.FloatInput(label="Gradient clip (0: off)", start=0, end=1e6)
        self.anneal = pn.widgets.IntInput(label="Anneal the energy over (steps; reverse KL)", start=0, end=1_000_000)
        self.seed = pn.widgets.IntInput(label="Seed", start=0, end=2**31 - 1)
        self.device = pn.widgets.Select(label="Device", options=available_devices())
        self.resolution = pn.widgets.Select(label="Grid resolution (paused)", options=RESOLUTIONS)
        for widget in (self.objective, self.learning_rate, self.batch_size, self.grad_clip, self.anneal, self.seed,
                       self.resolution):
            widget.param.watch(lambda e: self._edit_training(), "value")
        self.device.param.watch(self._on_device, "value")

        self.play_button = pn.widgets.Toggle(label="▶ Play", color="success", width=110, height=44,
                                             stylesheets=[":host .bk-btn { font-size: 17px; font-weight: 600; }"])
        self.play_button.param.watch(self._on_play, "value")
        self.step_button = pn.widgets.Button(label="Step", width=80, height=44)
        self.step_button.on_click(lambda e: self._step())
        self.reset_button = pn.widgets.Button(label="Reset", width=80, height=44)
        self.reset_button.on_click(lambda e: self._reset())
        self.speed = pn.widgets.Select(label="Speed", options=SPEEDS, width=190)
        self.speed.param.watch(lambda e: setattr(self.live, "steps_per_frame", e.new), "value")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", margin=(18, 10, 0, 10),
                                   styles={"font-size": "16px", "font-variant-numeric": "tabular-nums"})

        self.layer_form_holder = pn.Column(sizing_mode="stretch_width", margin=0)
        self.stack.param.watch(self._on_stack, "items")
        self.stack.param.watch(lambda e: self._show_layer_form(), "selected")
        self.stack.param.watch(lambda e: self._say(e.new) if e.new else None, "message")

    def _sync_controls(self) -> None:
        """Set every control from the spec (after a load, or to undo a refused edit)."""
        spec = self.spec
        self._syncing = True
        try:
            self.target_picker.value = spec.target.name if spec.target.name != "points" else ""
            self.base_select.value = spec.base.name
            self.base_learnable.value = spec.base.learnable
            training = spec.training
            self.objective.value = training["objective"]
            self.learning_rate.value = _nearest(LEARNING_RATES, training["learning_rate"])
            self.batch_size.value = _nearest(BATCH_SIZES, training["batch_size"])
            self.grad_clip.value = training["grad_clip"]
            self.anneal.value = training["anneal_steps"]
            self.seed.value = spec.seed
            self.resolution.value = _nearest(RESOLUTIONS, spec.view["resolution"])
            self.projector.value = spec.presentation.projector
            self.hidden.value = list(spec.presentation.hidden)
            self.target_form = SettingsForm(TARGETS[spec.target.name].info.settings, spec.target.settings,
                                            self._edit_target_settings)
            self.target_form_holder.objects = [self.target_form.panel]
            self.base_form = SettingsForm(BASES[spec.base.name].info.settings, spec.base.settings, self._edit_base)
            self.base_form_holder.objects = [self.base_form.panel]
            if self.stack.layer_specs() != spec.layers:
                self.stack.set_layers(spec.layers, self.live.layer_ids)  # the ids that name the trained weights
            self._show_layer_form()
            self._update_points_note()
        finally:
            self._syncing = False

    # -- editing -----------------------------------------------------------------------------------
    def _apply(self, data: dict[str, Any], device: str | None = None) -> bool:
        """Validate and apply a candidate spec; on error say why and put the controls back."""
        try:
            spec = ExperimentSpec.from_dict(data)
            self.live.apply(spec, self.stack.ids(), device)
        except (SpecError, ValueError) as error:
            self._say(str(error))
            self._sync_controls()
            return False
        target_changed = spec.target != self.spec.target or spec.view != self.spec.view
        presentation_changed = spec.presentation != self.spec.presentation
        self.spec = spec
        self._say("")
        if target_changed:
            self._show_target()
            self._new_recording(spec)
        if presentation_changed:
            self._show_presentation()
        if self._followed is not None:
            self._show_ledger()  # the same point, through the edited stack
        else:
            self._show_formula(None)
        self._update_link()
        if not self.live.playing:
            self._render_now()
        return True

    def _candidate(self) -> dict[str, Any]:
        data = self.spec.to_dict()
        data["layers"] = [{"type": l.type, "settings": l.settings, "enabled": l.enabled} for l in self.stack.layer_specs()]
        return data

    def _edit_target(self, name: str) -> None:
        if self._syncing or not name or name == self.spec.target.name:
            return
        data = self._candidate()
        data["target"] = {"name": name}
        if not TARGETS[name].info.smooth_density and data["training"]["objective"] == "reverse_kl":
            data["training"]["objective"] = "forward_kl"  # the only objective this target supports
        self._apply(data)
        self._sync_controls()

    def _edit_target_settings(self) -> None:
        if self._syncing:
            return
        data = self._candidate()
        data["target"]["settings"] = self.target_form.values()
        self._apply(data)

    def _edit_base(self) -> None:
        if self._syncing:
            return
        data = self._candidate()
        name = self.base_select.value
        renamed = name != self.spec.base.name
        settings = {} if renamed else self.base_form.values()
        data["base"] = {"name": name, "learnable": self.base_learnable.value, "settings": settings}
        if self._apply(data) and renamed:
            self._sync_controls()  # the new base's own settings form

    def _edit_training(self) -> None:
        if self._syncing:
            return
        data = self._candidate()
        data["training"].update(objective=self.objective.value, learning_rate=self.learning_rate.value,
                                batch_size=self.batch_size.value, grad_clip=self.grad_clip.value,
                                anneal_steps=self.anneal.value)
        data["seed"] = self.seed.value
        data["view"]["resolution"] = self.resolution.value
        self._apply(data)

    def _on_stack(self, _event) -> None:
        if self._syncing:
            return
        self._apply(self._candidate())
        self._show_layer_form()

    def _on_device(self, event) -> None:
        self._apply(self._candidate(), device=event.new)

    def _show_layer_form(self) -> None:
        selected = self.stack.selected
        items = [i for i in self.stack.items if i["id"] == selected]
        if not items:
            self.layer_form_holder.objects = [pn.pane.Markdown(
                "**Layer settings.** Click a layer in your flow to see what it does and change its settings.",
                styles={"font-size": "14px"})]
            return
        item = items[0]
        info = LAYERS[item["type"]].info
        position = self.stack.ids().index(selected) + 1
        form = SettingsForm(info.settings, item["settings"],
                            lambda: self._edit_layer_settings(selected, form))
        cheap = {"forward": "Sampling is one pass; density evaluation is sequential (slow).",
                 "inverse": "Density evaluation is one pass; sampling is sequential (slow).",
                 "both": ""}[info.cheap_direction]
        iterative = " Its inverse is computed numerically." if info.iterative_inverse else ""
        self.layer_form_holder.objects = [
            pn.pane.Markdown(f"**Layer {position}: {info.title}**\n\n{info.description} {cheap}{iterative}\n\n"
                             f"<small>{info.reference}</small>\n\nChanging a setting starts this layer afresh; "
                             "the other layers keep their weights.", styles={"font-size": "14px"}),
            form.panel,
        ]

    def _edit_layer_settings(self, layer_id: int, form: SettingsForm) -> None:
        try:
            self.stack.update_settings(layer_id, form.values())
        except SpecError as error:
            self._say(str(error))

    # -- files and links ---------------------------------------------------------------------------
    def load_spec(self, spec: ExperimentSpec) -> None:
        """Replace the whole experiment (a preset, a file, a link): untrained, from its seed."""
        self._pause()
        self.live.load(spec)
        self.spec = spec
        self._new_recording(spec)
        self._syncing = True
        self.stack.set_layers(spec.layers)
        self._syncing = False
        self._sync_controls()
        self._show_target()
        self._show_presentation()
        self.loss.clear()
        self._unfollow()
        self._update_link()
        self._render_now()
        self._say("")

    def _on_preset(self, event) -> None:
        path = self.presets.get(event.new)
        if path is not None:
            self.load_spec(ExperimentSpec.load(path))

    def _on_preset_upload(self, event) -> None:
        if event.new is None:  # (an empty file is b"", and gets its message below)
            return
        try:
            spec = ExperimentSpec.from_json(event.new)
        except SpecError as error:
            self._say(f"That preset file was not loaded ({error}). The current experiment is unchanged.")
            return
        self.load_spec(spec)

    def _refused(self, error: str, kept: str) -> None:
        if error:
            self._say(f"{error}. Nothing was loaded; {kept} is unchanged.")

    def _preset_file(self) -> io.StringIO:
        return io.StringIO(self.spec.to_json() + "\n")

    # exports: each runs on a copy of the weights, so training need not stop
    def _views_png(self) -> io.BytesIO:
        return io.BytesIO(views_png(self.live.copy_flow(), self.live.trainer.target, self.spec))

    def _depth_gif(self) -> io.BytesIO:
        return io.BytesIO(depth_gif(self.live.copy_flow(), self.spec))

    def _training_gif(self) -> io.BytesIO:
        if len(self.recorder) < 2:
            self._say("Train for a few steps first (▶ Play or Step): the GIF shows the frames of this run.")
            return io.BytesIO(b"")
        return io.BytesIO(self.recorder.gif())

    def _model_file(self) -> io.BytesIO:
        return io.BytesIO(model_bytes(self.live.copy_flow(), self.spec, self.live.step))

    def _samples_file(self) -> io.BytesIO:
        return io.BytesIO(samples_csv(self.live.copy_flow(), 2000, self.spec.seed))

    def _new_recording(self, spec: ExperimentSpec) -> None:
        self.recorder = TrainingRecorder(spec.view, title=spec.title)
        self._recorded_step = -1

    def _on_points_upload(self, event) -> None:
        if event.new is None:  # (an empty file is b"", and gets its message below)
            return
        name = self.points_upload.filename or ""
        try:
            points = parse_points(event.new, name)
        except PointsFileError as error:
            self._say(f"{name or 'The file'} was not loaded: {error} The current target is unchanged.")
            return
        data = self._candidate()
        settings = self.spec.target.settings if self.spec.target.name == "points" else {}
        data["target"] = {"name": "points", "settings": settings, "points": points.tolist()}
        data["training"]["objective"] = "forward_kl"
        self._points_source = f"{len(points):,} points from {name}" if name else f"{len(points):,} points"
        if self._apply(data):
            self._sync_controls()

    def _update_points_note(self) -> None:
        if self.spec.target.name == "points":
            source = self._points_source or f"{len(self.spec.target.points):,} points"
            self.points_note.object = f"**Training on your points:** {source}."
        else:
            self.points_note.object = ("Or your own points: a CSV/TSV/text file of two numeric columns "
                                       "(x, y; a header row is fine), a .npy array of shape (N, 2), or a JSON list of [x, y].")

    def _update_link(self) -> None:
        packed = spec_to_link(self.spec)
        if len(packed) > MAX_LINK_CHARS:
            self.link.value = "(too many points for a link: download the experiment instead)"
            return
        location = pn.state.location
        if location is not None and pn.state.curdoc is not None:
            location.update_query(**{LINK_PARAMETER: packed})
            port = f":{location.port}" if location.port else ""
            origin = f"{location.protocol}//{location.hostname}{port}{location.pathname}" if location.hostname else ""
            self.link.value = f"{origin}?{LINK_PARAMETER}={packed}"
        else:
            self.link.value = f"?{LINK_PARAMETER}={packed}"

    @classmethod
    def from_link(cls, value: str | None, gate: ComputeGate | None = None) -> tuple[Explorer, str]:
        """An explorer for a shared link's experiment. Parts of the link that are wrong fall back to
        their defaults, and the message says which (empty when the link was sound)."""
        if not value:
            return cls(gate=gate), ""
        spec, ignored = read_link(value)
        if not ignored:
            return cls(spec, gate=gate), ""
        shown = "; ".join(ignored[:4]) + (f"; and {len(ignored) - 4} more" if len(ignored) > 4 else "")
        return cls(spec, gate=gate), f"Parts of this link could not be used, so defaults stand in for them: {shown}."

    # -- training ----------------------------------------------------------------------------------
    def _on_play(self, event) -> None:
        if event.new:
            self.live.steps_per_frame = self.speed.value
            self.live.play()
            self.play_button.label = "❚❚ Pause"
            self.playing = True
        else:
            self.live.pause()
            self.play_button.label = "▶ Play"
            self.playing = False
            self._render_now()

    def _pause(self) -> None:
        if self.play_button.value:
            self.play_button.value = False

    def _step(self) -> None:
        self._pause()
        if not self.live.step_once():
            self._say(self.live.error or "")
        self._explain_steps = True
        self._render_now()

    def _reset(self) -> None:
        self._pause()
        self.live.reset()
        self._new_recording(self.spec)
        self._explain_steps = False
        self.loss.clear()
        self._render_now()
        self._say("")

    def start(self) -> None:
        """Begin pushing frames to this session's page (call inside a server session)."""
        if self._callback is None and pn.state.curdoc is not None:
            # In the background: otherwise Panel marks the app busy and idle around every tick, and
            # the watchers of `pn.state.busy` cost ~10% of the event loop at 25 ticks a second.
            self._callback = PeriodicCallback(callback=self.tick, period=TICK_MS, background=True)
            self._callback.start()
            pn.state.onload(self._update_link)  # the page's own address is known once it has loaded
            pn.state.on_session_destroyed(lambda _context: self.close())

    def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.live.close()

    def tick(self) -> None:
        """Push the newest frame, if there is one (periodic callback, on the server's event loop)."""
        if self.live.error and self.play_button.value:
            self._say(self.live.error)
            self._pause()
        frame = self.live.take_frame()
        if frame is None:
            if not self.live.playing:
                self._show_status()
            return
        self._push(frame)

    def _render_now(self) -> None:
        self._push(self.live.render())
        self.live.take_frame()

    # -- views -------------------------------------------------------------------------------------
    def _build_views(self) -> None:
        view = self.spec.view
        marks = ColumnDataSource({"x": [], "y": []})  # the followed point, in every strip
        self.density = DepthStrip("density", "Density q_k after each layer", marks=marks)
        self.log_det = DepthStrip("log_det", "ln|det J_k| of each layer, in nats: red expands area, blue contracts it",
                                  images=self.density.images, marks=marks)
        self.samples = DepthStrip("samples", "Samples z_k after each layer, coloured by where they start in the base",
                                  marks=marks)
        for strip in (self.density, self.log_det, self.samples):
            strip.figure.on_event(Tap, lambda event, strip=strip: self._on_strip_tap(strip, event.x, event.y))
        self.target_model = TargetAndModel(view)
        self.target_model.model_fig.on_event(Tap, lambda event: self._on_output_tap(event.x, event.y))
        target_fig = self.target_model.target_fig
        target_fig.on_event(Tap, lambda event: self._on_target_event(event.x, event.y, "tap"))
        target_fig.on_event(PanStart, lambda event: self._on_target_event(event.x, event.y, "drag"))
        target_fig.on_event(Pan, lambda event: self._on_target_event(event.x, event.y, "drag"))
        self.animation = DepthAnimation(view)
        self.loss = LossChart()
        self.cumulative = pn.widgets.RadioButtonGroup(options={"this layer": False, "cumulative Σ_j≤k": True},
                                                      value=False, color="default")
        self.cumulative.param.watch(lambda e: self._redraw(), "value")
        self.overlay = pn.widgets.Checkbox(label="show target samples over the densities", value=False)
        self.overlay.param.watch(lambda e: self._show_overlay(), "value")
        self.player = pn.widgets.Player(start=0, end=ANIMATION_STEPS, value=0, interval=60, loop_policy="loop",
                                        show_loop_controls=False, width=250, show_value=False)
        self.player.param.watch(lambda e: self._animate(), "value")

    def _show_target(self) -> None:
        picture = self.live.target_picture
        self.target_model.set_target(picture.density, picture.points, self.spec.view)
        self.animation.set_view(self.spec.view)
        self._show_overlay()

    def _show_overlay(self) -> None:
        points = self.live.target_picture.points if self.overlay.value else None
        self.density.show_overlay(points)
        self.target_model.overlay.visible = self.overlay.value

    def _push(self, frame) -> None:
        self._latest = frame
        self._push_times.append(time.perf_counter())
        with pn.io.hold():
            self._draw(frame)
            self.loss.update(self.live.history_steps, self.live.history_loss, self.live.evaluations, self._kl_label())
            self._show_status(frame.step)
            if self._followed is not None and (not self.live.playing or self._frames_drawn % ANIMATION_EVERY == 0):
                self._show_ledger()
            self._show_explanation(frame)
            if frame.step != self._recorded_step:
                loss = self.live.history_loss[-1] if self.live.history_loss else float("nan")
                self.recorder.add(frame.step, loss, frame.views)
                self._recorded_step = frame.step


    def _draw(self, frame) -> None:
        views, titles = frame.views, frame.layer_titles
        update_images(self.density.images, [self.density.update(views, self.spec.view, titles),
                                            self.log_det.update(views, self.spec.view, titles, self.cumulative.value)])
        self.samples.update(views, self.spec.view, titles)
        self.target_model.update(views)
        depth = len(views.layers)
        self.player.end = max(depth, 1) * ANIMATION_STEPS
        # While training, the animation (a fourth view of the same frame) refreshes every few frames.
        self._frames_drawn += 1
        if not self.live.playing or self._frames_drawn % ANIMATION_EVERY == 0:
            self.animation.show(views, titles, self.player.value / ANIMATION_STEPS)
        if self.overlay.value:
            self._show_overlay()

    def _redraw(self) -> None:
        if self._latest is not None:
            with pn.io.hold():
                self._draw(self._latest)

    def _animate(self) -> None:
        if self._latest is not None:
            self.animation.show(self._latest.views, self._latest.layer_titles, self.player.value / ANIMATION_STEPS)

    def _kl_label(self) -> str:
        if not TARGETS[self.spec.target.name].info.exact_density:
            return ""
        return "true KL(p‖q)" if self.spec.training["objective"] == "forward_kl" else "true KL(q‖p)"

    def frames_per_second(self) -> float:
        """Frames this page received per second (what the viewer sees, not what was rendered)."""
        return rate_per_second(self._push_times)

    def _show_status(self, step: int | None = None) -> None:
        live = self.live
        step = live.step if step is None else step
        parts = [f"<b>step <span id='fv-step'>{step:,}</span></b>"]
        if live.playing:
            parts.append(f"{live.steps_per_second():.0f} steps/s")
            parts.append(f"{self.frames_per_second():.1f} frames/s")
        if live.history_loss:
            recent = live.history_loss[-20:]
            parts.append(f"loss <span id='fv-loss'>{sum(recent) / len(recent):.3f}</span> nats")
        evaluation = live.latest_evaluation()
        if evaluation is not None:
            parts.append(f"held-out NLL {evaluation.test_nll:.3f} nats")
            if evaluation.kl is not None:
                parts.append(f"{self._kl_label().replace('true ', '')} {evaluation.kl:.3f} nats")
        html = " · ".join(parts)
        if html != self.status.object:
            self.status.object = html

    def _say(self, text: str) -> None:
        self.message = text
        self.alert.object = text
        self.alert.visible = bool(text)

    # -- teaching: the ledger, the formula, drawing, step explanations, presentation ----------------
    def _build_teaching(self) -> None:
        self.ledger_table = pn.pane.HTML(LEDGER_HINT, stylesheets=[LEDGER_CSS], sizing_mode="stretch_width",
                                         styles={"font-size": "14px"})
        self.unfollow_button = pn.widgets.Button(label="Stop following", visible=False, width=140)
        self.unfollow_button.on_click(lambda e: self._unfollow())
        self.formula = pn.pane.LaTeX("", renderer="katex", sizing_mode="stretch_width", styles={"font-size": "15px"})
        self._explain_steps = False
        self.explanation = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", margin=(0, 10),
                                        styles={"font-size": "15px", "background": "#f4f7fb",
                                                "border-left": "4px solid #2a6fdb", "padding": "6px 12px"})

        self.draw_toggle = pn.widgets.Toggle(label="✎ Draw", width=75, color="default")
        self.draw_toggle.param.watch(lambda e: self._on_draw_mode(e.new), "value")
        self.draw_clear = pn.widgets.Button(label="Clear", width=65)
        self.draw_clear.on_click(lambda e: self._clear_drawing())
        self.draw_use = pn.widgets.Button(label="Train on it", width=95, color="primary", disabled=True)
        self.draw_use.on_click(lambda e: self._use_drawing())
        self.draw_note = pn.pane.Markdown("", margin=(0, 5), styles={"font-size": "13px"}, visible=False, width=250)

        self.projector = pn.widgets.Checkbox(label="Projector: large type and plots")
        self.projector.param.watch(lambda e: self._edit_presentation(), "value")
        self.hidden = pn.widgets.CheckBoxGroup(options={PANEL_LABELS[name]: name for name in PANELS}, inline=True)
        self.hidden.param.watch(lambda e: self._edit_presentation(), "value")

    def _build_layout(self) -> None:
        card = dict(sizing_mode="stretch_width", collapsible=True, margin=(4, 0))
        self.target_column = pn.Column(self.target_model.target_fig,
                                       pn.Row(self.draw_toggle, self.draw_clear, self.draw_use), self.draw_note,
                                       width=260)
        self.panels: dict[str, pn.viewable.Viewable] = {
            "experiment": pn.Card(self.preset_select, pn.pane.Markdown("Open a preset file:", margin=(0, 5)),
                                  self.preset_upload, self.download, self.link,
                                  pn.pane.Markdown("**Export**", margin=(6, 5, 0, 5)), *self.exports,
                                  title="Experiment", **card),
            "target": pn.Card(self.target_picker, self.target_form_holder, self.points_note, self.points_upload,
                              title="Target", **card),
            "base": pn.Card(self.base_select, self.base_learnable, self.base_form_holder, title="Base distribution",
                            **card),
            "training": pn.Card(self.objective, self.learning_rate, self.batch_size, self.grad_clip, self.anneal,
                                self.seed, self.device, self.resolution, title="Training", **card),
            "layers": pn.Row(pn.Column(self.stack, sizing_mode="stretch_width"),
                             pn.Column(self.layer_form_holder, width=320), sizing_mode="stretch_width"),
            "overview": pn.FlexBox(
                self.target_column,
                self.target_model.model_fig, pn.Column(self.animation.fig, self.player), self.loss.fig, gap="8px"),
            "ledger": pn.Card(self.formula, pn.Column(self.ledger_table, self.unfollow_button, max_width=900,
                                                      sizing_mode="stretch_width"),
                              title="Follow a point: the change-of-variables ledger", **card),
            "density": pn.Column(self.overlay, self.density.figure, sizing_mode="stretch_width"),
            "log_det": pn.Column(self.cumulative, self.log_det.figure, sizing_mode="stretch_width"),
            "samples": pn.Column(self.samples.figure, sizing_mode="stretch_width"),
        }
        self.presentation_card = pn.Card(
            self.projector, pn.pane.Markdown("Hide (saved in the link and in downloaded presets):", margin=(0, 5)),
            self.hidden, title="Presentation", collapsed=True, sizing_mode="stretch_width", margin=(4, 0))
        toolbar = pn.Row(self.play_button, self.step_button, self.reset_button, self.speed, self.status,
                         sizing_mode="stretch_width", align="center")
        self._sidebar = [self.panels[name] for name in SIDEBAR_PANELS]
        self._main = [toolbar, self.explanation, self.alert, self.panels["layers"], self.panels["overview"],
                      self.panels["ledger"], self.panels["density"], self.panels["log_det"], self.panels["samples"],
                      self.presentation_card]

    def _edit_presentation(self) -> None:
        if self._syncing:
            return
        data = self._candidate()
        data["presentation"] = {"projector": self.projector.value, "hidden": list(self.hidden.value)}
        self._apply(data)

    def _show_presentation(self) -> None:
        presentation = self.spec.presentation
        for name, viewable in self.panels.items():
            viewable.visible = name not in presentation.hidden
        on = presentation.projector
        for view in (self.density, self.log_det, self.samples, self.target_model, self.animation, self.loss):
            view.set_projector(on)
        big = {"font-size": "24px" if on else "16px"}
        self.status.styles = {**self.status.styles, **big}
        self.explanation.styles = {**self.explanation.styles, "font-size": "21px" if on else "15px"}
        self.ledger_table.styles = {"font-size": "19px" if on else "14px"}
        self.formula.styles = {"font-size": "21px" if on else "15px"}
        for button in (self.play_button, self.step_button, self.reset_button):
            button.height = 60 if on else 44
        self.target_column.width = self.target_model.target_fig.width + 10
        self._redraw()

    def sidebar_hidden(self) -> bool:
        """True when every sidebar panel is hidden (the page can then fold the sidebar away)."""
        return all(name in self.spec.presentation.hidden for name in SIDEBAR_PANELS)

    # ledger
    def _on_strip_tap(self, strip: DepthStrip, x: float, y: float) -> None:
        found = strip.locate(x, y)
        if found is not None:
            self._follow(*found)

    def _on_output_tap(self, x: float, y: float) -> None:
        self._follow(len(self.live.flow.active()), (x, y))

    def _follow(self, depth: int, point: tuple[float, float]) -> None:
        self._followed = (depth, (float(point[0]), float(point[1])))
        self._show_ledger()

    def _unfollow(self) -> None:
        self._followed = None
        self.ledger_table.object = LEDGER_HINT
        self.unfollow_button.visible = False
        self.density.marks.data = {"x": [], "y": []}
        self.target_model.show_path(None)
        self._show_formula(None)

    def _show_ledger(self) -> None:
        depth, point = self._followed
        ledger = self.live.follow(point, depth)
        titles = [LAYERS[row.layer].info.title for row in ledger.rows[1:]]
        self.ledger_table.object = ledger_html(ledger, titles)
        self.unfollow_button.visible = True
        points = np.array([row.point for row in ledger.rows])
        self.density.marks.data = self.density.marks_data(points)
        self.target_model.show_path(points)
        self._show_formula(ledger)

    def _show_formula(self, ledger) -> None:
        types = [layer.type for layer in self.spec.layers if layer.enabled]
        tex = formula_tex(types, {name: LAYERS[name].info.title for name in set(types)}, ledger)
        if self.formula.object != f"$${tex}$$":
            self.formula.object = f"$${tex}$$"

    # drawing
    def _on_draw_mode(self, on: bool) -> None:
        # While drawing, a drag on the target paints instead of panning it.
        self.target_model.target_fig.toolbar.active_drag = None if on else "auto"
        self.target_model.hovers[0].renderers = [] if on else [self.target_model.renderers[0]]  # no tooltip
        self.target_model.renderers[0].glyph.global_alpha = 0.3 if on else 1.0  # draw on a faded target
        self.draw_toggle.color = "warning" if on else "default"
        self._show_draw_note()

    def _on_target_event(self, x: float, y: float, gesture: str) -> None:
        if not self.draw_toggle.value:
            if gesture == "tap":
                self._on_output_tap(x, y)
            return
        if len(self._drawn) >= MAX_DRAWN:
            return
        view = self.spec.view
        spread = BRUSH_RADIUS * (view["xmax"] - view["xmin"])
        sprayed = self._brush.normal((x, y), spread, size=(BRUSH_POINTS[gesture], 2))
        sprayed = sprayed[(sprayed[:, 0] >= view["xmin"]) & (sprayed[:, 0] <= view["xmax"])
                          & (sprayed[:, 1] >= view["ymin"]) & (sprayed[:, 1] <= view["ymax"])]
        self._drawn.extend(map(tuple, sprayed.tolist()))
        self.target_model.drawn.stream({"x": sprayed[:, 0], "y": sprayed[:, 1]})
        self._show_draw_note()

    def _clear_drawing(self) -> None:
        self._drawn = []
        self.target_model.drawn.data = {"x": np.zeros(0), "y": np.zeros(0)}
        self._show_draw_note()

    def _use_drawing(self) -> None:
        if len(self._drawn) < 2:
            self._say("Draw some points first: switch on ✎ Draw, then click or drag on the target.")
            return
        data = self._candidate()
        data["target"] = {"name": "points", "settings": {"standardize": False}, "points": [list(p) for p in self._drawn]}
        data["training"]["objective"] = "forward_kl"
        self._points_source = f"{len(self._drawn):,} points drawn by hand"
        if self._apply(data):
            self.loss.clear()
            self.draw_toggle.value = False
            self._clear_drawing()
            self._sync_controls()

    def _show_draw_note(self) -> None:
        count = len(self._drawn)
        self.draw_use.disabled = count < 2
        drawing = self.draw_toggle.value
        self.draw_note.visible = drawing or count > 0
        if drawing:
            self.draw_note.object = (f"**Drawing:** click or drag on the target to spray points ({count:,} so far), "
                                     "then *Train on it*.")
        else:
            self.draw_note.object = f"{count:,} points drawn; *Train on it* makes them the target."

    # step explanations
    def _show_explanation(self, frame) -> None:
        slow = 0 < self.live.steps_per_frame <= SLOW_MOTION
        show = frame.step > 0 and ((self.live.playing and slow) or (not self.live.playing and self._explain_steps))
        self.explanation.visible = show
        if not show:
            return
        trainer = self.live.trainer
        loss = self.live.history_loss[-1] if self.live.history_loss else None
        text = step_explanation(self.spec, frame.step, loss, trainer.last_grad_norm, trainer.inverse_temperature(),
                                len(frame.views.layers))
        if self.live.playing:
            text += f"<div style='color:#556'>Slow motion: {self.live.steps_per_frame} step(s) per frame.</div>"
        self.explanation.object = text

    # -- layout ------------------------------------------------------------------------------------
    def sidebar(self) -> list:
        return self._sidebar

    def main(self) -> list:
        return self._main

    def __panel__(self):
        return pn.Row(pn.Column(*self.sidebar(), width=360), pn.Column(*self.main(), sizing_mode="stretch_width"))
