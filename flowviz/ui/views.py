"""The main area's views, one job each; every one takes the session's `ExperimentState` and reacts to it.

- `Toolbar`: Play/Pause, Step, Reset, speed, the status line, the step explanation and the message.
- `LayerEditor`: the drag-in layer stack and the selected layer's settings.
- `Overview`: the target (and drawing on it), the model, the flow through depth, the loss.
- `StripsView`: the density, ln|det J| and sample strips.
- `LedgerView`: the change-of-variables formula and the followed point's ledger.

A view writes only to the state (`state.step()`, `state.follow(...)`, `state.playing = True`) and
redraws from it (`param.depends(..., watch=True)`); no view calls another.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import panel as pn
import param
from bokeh.events import Pan, PanStart, Tap
from bokeh.models import ColumnDataSource

from flowviz.core.layers import LAYERS
from flowviz.core.settings import SpecError
from flowviz.core.spec import PRESENTATION_SETTINGS
from flowviz.ui.forms import SettingsForm
from flowviz.ui.layout import Sizes
from flowviz.ui.live import FIT_POINTS_LIVE, LIVE_STRIP_RESOLUTION
from flowviz.ui.pickers import StatusLine
from flowviz.ui.plots import DepthAnimation, LossChart, TargetAndModel, leave_dimmed_copies_to_the_page
from flowviz.ui.stack import LayerStack
from flowviz.ui.state import ANIMATION_EVERY, ExperimentState
from flowviz.ui.strips import ImageStrip, SampleStrip, fits_source, image_source, send_images
from flowviz.ui.teaching import LEDGER_CSS, formula_tex, ledger_html, step_explanation

ANIMATION_STEPS = 24  # animation ticks per layer
LOSS_EVERY_S = 1.0  # while training, seconds between updates of the loss chart
# What the density strip shows, by Frame.kind: the page says when it is not the exact chain.
DENSITY_TITLES = {
    "exact": "Density q_k after each layer (exact: each depth through its inverse chain)",
    "live": "Density q_k after each layer (live preview: each depth resampled from the one before; "
            "pause for the exact chain)",
    "preview": "Density q_k after each layer (coarse preview; the exact view follows)",
}
# The short forms are for a strip of one or two panels, narrower than the long title (Bokeh clips it).
SHORT_DENSITY_TITLES = {"exact": "Density q_k (exact)", "live": "Density q_k (live preview)",
                        "preview": "Density q_k (coarse preview)"}
LOG_DET_TITLES = ("ln|det J_k| of each layer, in nats: red expands area, blue contracts it", "ln|det J_k| (nats)")
SAMPLE_TITLES = (("Samples z_k after each layer, coloured by where they start in the base; after a continuous flow, "
                  "arrows show its velocity v(x, t) at the panel's time t"),
                 "Samples z_k after each layer, coloured by where they start in the base; arrows: velocity v(x, t)",
                 "Samples z_k")
SPEEDS = {"as fast as it goes": 0, "1 step per frame": 1, "2 steps per frame": 2, "5 steps per frame": 5,
          "20 steps per frame": 20, "100 steps per frame": 100}
LEDGER_HINT = ("<p><b>Follow a point.</b> Click any panel of the density, ln|det J| or sample strips, or the "
               "target or model, and that point is followed through every layer: where it starts in the base, "
               "every layer's ln|det J<sub>k</sub>|, and ln q<sub>K</sub> summed up beside its direct value.</p>")
NO_LAYER_SELECTED = "**Layer settings.** Click a layer in your flow to see what it does and change its settings."


def edits_bokeh(method):
    """For a watcher that edits Bokeh models directly (sources, titles, sizes), not through a Panel
    object. When a Bokeh event (a FrameClock message, a click) reaches the server while a widget's
    change waits out its debounce, Panel runs that change inside the event's coroutine, which holds
    no document lock (panel.reactive `_event_coroutine`), and a plain Bokeh edit there raises
    "_pending_writes should be non-None when we have a document lock" (the Pause click that once
    failed one browser run in four). `pn.io.unlocked()` holds the document and sends the edits to
    the page itself, with the lock or without it."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with pn.io.unlocked():
            return method(self, *args, **kwargs)

    return wrapper


class StateView(pn.viewable.Viewer):
    """A view of one session's state: it writes to `state` and redraws from it."""

    state = param.ClassSelector(class_=ExperimentState)

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state=state, **params)


class Toolbar(StateView):
    """Play/Pause, Step, Reset and speed; the status line; what the last step did; what went wrong."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        big = [":host .bk-btn { font-size: 17px; font-weight: 600; }"]
        self.play = pn.widgets.Toggle(label="▶ Play", color="success", width=110, height=44, stylesheets=big)
        self.play.param.watch(lambda event: setattr(state, "playing", event.new), "value")
        self.step = pn.widgets.Button(label="Step", width=80, height=44)
        self.step.on_click(lambda _event: state.step())
        self.reset = pn.widgets.Button(label="Reset", width=80, height=44)
        self.reset.on_click(lambda _event: state.reset())
        self.speed = pn.widgets.Select(label="Speed", options=SPEEDS, value=state.steps_per_frame, width=190)
        self.speed.param.watch(lambda event: setattr(state, "steps_per_frame", event.new), "value")
        # The status line changes with every frame: Panel's HTML pane re-sent its dozen properties and
        # the template's design modifiers with each change (0.38 ms alone, 2.1 ms of the event loop per
        # frame while training), and a Bokeh Div re-rendered itself in the page; see StatusLine.
        self.status = StatusLine(margin=(4, 10, 0, 5), min_width=320, sizing_mode="stretch_width",
                                 styles={"flex": "1 1 100%",  # a row of its own under the buttons:
                                         # it grows as evaluations come in and would wrap beside them
                                         "font-size": "16px", "font-variant-numeric": "tabular-nums"})
        self.explanation = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", margin=(0, 10),
                                        styles={"font-size": "15px", "background": "#f4f7fb",
                                                "border-left": "4px solid #2a6fdb", "padding": "6px 12px"})
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", margin=(0, 5))
        self._show_playing()
        self._show_frame()
        self._show_message()

    @param.depends("state.playing", watch=True)
    def _show_playing(self) -> None:
        self.play.param.update(value=self.state.playing, label="❚❚ Pause" if self.state.playing else "▶ Play")

    @param.depends("state.message", watch=True)
    def _show_message(self) -> None:
        self.alert.param.update(object=self.state.message, visible=bool(self.state.message))

    @param.depends("state.frame", watch=True)
    def _show_frame(self) -> None:
        frame = self.state.frame
        if frame is None:
            return
        self._show_status(frame.step)
        self._show_explanation(frame)

    def _show_status(self, step: int) -> None:
        state, live = self.state, self.state.live
        parts = [f"<b>step <span id='fv-step'>{step:,}</span></b>"]
        if state.playing:
            parts.append(f"{live.steps_per_second():.0f} steps/s")
            parts.append(f"{state.frames_per_second():.1f} frames/s")
        if live.losses:
            recent = live.losses[-20:]
            parts.append(f"loss <span id='fv-loss'>{sum(recent) / len(recent):.3f}</span> nats")
        evaluation = live.latest_evaluation()
        if evaluation is not None:
            parts.append(f"held-out NLL <span id='fv-nll'>{evaluation.test_nll:.3f}</span> nats")
            if evaluation.kl is not None:
                parts.append(f"{state.kl_label().replace('true ', '')} {evaluation.kl:.3f} nats")
            if evaluation.ess is not None:  # from q's samples under reverse KL, else from the target's
                reverse = state.spec.training.objective == "reverse_kl"
                parts.append(f"{'ESS' if reverse else 'forward ESS'} {evaluation.ess:.2f}")
            if evaluation.log_z is not None:
                parts.append(f"ln Z ≈ {evaluation.log_z:.3f} ± {evaluation.log_z_se:.3f}")
        self.status.show(" · ".join(parts))

    def _show_explanation(self, frame) -> None:
        state = self.state
        show = state.explains(frame)
        self.explanation.visible = show
        if not show:
            return
        trainer = state.live.trainer
        loss = state.live.losses[-1] if state.live.losses else None
        text = step_explanation(state.spec, frame.step, loss, trainer.last_grad_norm, trainer.inverse_temperature(),
                                len(frame.views.layers))
        if state.playing:
            text += f"<div style='color:#556'>Slow motion: {state.steps_per_frame} step(s) per frame.</div>"
        self.explanation.object = text

    @edits_bokeh
    def set_sizes(self, sizes: Sizes) -> None:
        self.status.styles = {**self.status.styles, "font-size": f"{sizes.text_font + 1}px"}
        self.explanation.styles = {**self.explanation.styles, "font-size": f"{sizes.text_font}px"}
        for button in (self.play, self.step, self.reset):
            button.height = sizes.button_px

    def __panel__(self):
        return pn.FlexBox(self.play, self.step, self.reset, self.speed, self.status, align_items="center",
                          flex_wrap="wrap", sizing_mode="stretch_width")


class LayerEditor(StateView):
    """The palette and the stack (stack.py), and the settings of the layer that is selected."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.stack = LayerStack(sizing_mode="stretch_width")
        self.stack.set_layers(state.spec.layers, state.layer_ids)
        self.form_holder = pn.Column(sizing_mode="stretch_width", margin=0)
        self.form: SettingsForm | None = None
        self._form_for: int | None = None  # the id of the layer whose form is shown
        self.stack.param.watch(lambda _event: state.set_layers(self.stack.layer_specs(), self.stack.ids()), "items")
        self.stack.param.watch(lambda _event: self._show_form(), "selected")
        self.stack.param.watch(lambda event: state.say(event.new) if event.new else None, "message")
        self._show_stack()

    @param.depends("state.spec", "state.layer_ids", watch=True)
    def _show_stack(self) -> None:
        state = self.state
        if self.stack.layer_specs() != state.spec.layers or self.stack.ids() != state.layer_ids:
            self.stack.set_layers(state.spec.layers, state.layer_ids)  # the ids that name the trained weights
        held = state.held_part()
        if isinstance(held, int) and self.stack.selected != held:
            self.stack.selected = held  # (its watcher shows the form)
        self._show_form()

    def _show_form(self) -> None:
        selected = self.stack.selected
        items = [item for item in self.stack.items if item["id"] == selected]
        if not items:
            self.form, self._form_for = None, None
            self.form_holder.objects = [pn.pane.Markdown(NO_LAYER_SELECTED, styles={"font-size": "14px"})]
            return
        item = items[0]
        info = LAYERS[item["type"]].info
        if self.form is not None and self._form_for == selected:
            self.form.show(item["settings"])
            return
        self._form_for = selected
        self.form = SettingsForm(info.settings, item["settings"], lambda name, value: self._edit(selected, name, value))
        cheap = {"forward": "Sampling is one pass; density evaluation is sequential (slow).",
                 "inverse": "Density evaluation is one pass; sampling is sequential (slow).",
                 "both": ""}[info.cheap_direction]
        iterative = " Its inverse is computed numerically." if info.iterative_inverse else ""
        position = self.stack.ids().index(selected) + 1
        self.form_holder.objects = [
            pn.pane.Markdown(f"**Layer {position}: {info.title}**\n\n{info.description} {cheap}{iterative}\n\n"
                             f"<small>{info.reference}</small>\n\nChanging a setting starts this layer afresh; "
                             "the other layers keep their weights.", styles={"font-size": "13px"},
                             sizing_mode="stretch_width"),
            self.form.panel,
        ]
        if info.handles:
            by_hand = pn.widgets.Button(label="Move it by hand", color="primary", variant="outline",
                                        css_classes=["fv-by-hand"])
            by_hand.on_click(lambda _event: self.state.hold(selected))
            self.form_holder.append(by_hand)

    def _edit(self, layer_id: int, name: str, value) -> None:
        item = next((i for i in self.stack.items if i["id"] == layer_id), None)
        if item is None or item["settings"].get(name) == value:
            return
        try:
            self.stack.update_settings(layer_id, {**item["settings"], name: value})
        except SpecError as error:
            self.state.say(str(error))
            if self.form is not None:
                self.form.show(item["settings"])  # snap back

    def __panel__(self):
        return pn.FlexBox(pn.Column(self.stack, sizing_mode="stretch_width", min_width=420, styles={"flex": "2 1 420px"}),
                          pn.Column(self.form_holder, min_width=260, max_width=420, styles={"flex": "1 1 260px"}),
                          gap="10px", flex_wrap="wrap", sizing_mode="stretch_width")


class Overview(StateView):
    """The target (draw on it, or click it to follow a point), the model q_K, the flow played
    through depth, and the loss."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        view = state.spec.view
        self.target_model = TargetAndModel(view)
        self.animation = DepthAnimation(view)
        self.loss = LossChart()
        self.player = pn.widgets.Player(start=0, end=ANIMATION_STEPS, value=0, interval=60, loop_policy="loop",
                                        show_loop_controls=False, width=250, show_value=False)
        self.player.param.watch(lambda _event: self._animate(), "value")
        self.draw = pn.widgets.Toggle(label="✎ Draw", width=75, color="default")
        self.draw.param.watch(lambda event: setattr(state, "drawing", event.new), "value")
        self.clear = pn.widgets.Button(label="Clear", width=65)
        self.clear.on_click(lambda _event: state.clear_drawing())
        self.use = pn.widgets.Button(label="Train on it", width=95, color="primary", disabled=True)
        self.use.on_click(lambda _event: state.use_drawing())
        self.draw_note = pn.pane.Markdown("", margin=(0, 5), styles={"font-size": "13px"}, visible=False, width=250)
        self.target_model.model_fig.on_event(Tap, lambda event: state.follow_output(event.x, event.y))
        target_fig = self.target_model.target_fig
        target_fig.on_event(Tap, lambda event: self.target_event(event.x, event.y, "tap"))
        target_fig.on_event(PanStart, lambda event: self.target_event(event.x, event.y, "drag"))
        target_fig.on_event(Pan, lambda event: self.target_event(event.x, event.y, "drag"))
        self.target_column = pn.Column(target_fig, pn.Row(self.draw, self.clear, self.use), self.draw_note, width=260)
        self._shown_target = None
        self._shown = None  # the frame last drawn
        self._loss_drawn = -math.inf  # when the loss chart was last updated
        self._show_target()
        self._show_frame()

    @param.depends("state.unseen", watch=True)
    def _come_into_view(self) -> None:
        if "overview" not in self.state.unseen and self._shown is not self.state.frame:
            self._show_frame()
            self._animate()

    def target_event(self, x: float, y: float, gesture: str) -> None:
        """A click ("tap") or a drag on the target: paints while drawing, else a click follows the point."""
        if self.state.drawing:
            self.state.spray(x, y, gesture)
        elif gesture == "tap":
            self.state.follow_output(x, y)

    @param.depends("state.spec", "state.overlay", watch=True)
    @edits_bokeh
    def _show_target(self) -> None:
        spec = self.state.spec
        if self._shown_target != (spec.target, spec.view, spec.seed):
            self._shown_target = (spec.target, spec.view, spec.seed)
            picture = self.state.live.target_picture
            self.target_model.set_target(picture.density, picture.points, spec.view)
            self.animation.set_view(spec.view)
        self.target_model.overlay.visible = self.state.overlay

    @param.depends("state.frame", watch=True)
    @edits_bokeh
    def _show_frame(self) -> None:
        frame, state = self.state.frame, self.state
        if frame is None or "overview" in state.unseen:
            return
        self._shown = frame
        self.target_model.update(frame.model, quantised=frame.transient)
        self.player.end = max(len(frame.views.layers), 1) * ANIMATION_STEPS
        # While training or a hand drags a layer, the animation (a fourth view of the same frame)
        # refreshes every few frames; the exact frame that follows a drag redraws it.
        if not frame.transient or state.frames_shown % ANIMATION_EVERY == 0:
            self._animate()
        # While training the loss chart, the page's costliest figure to redraw, follows once a second.
        now = time.perf_counter()
        if not frame.transient or (state.playing and now - self._loss_drawn >= LOSS_EVERY_S):  # (a drag adds no loss)
            self._loss_drawn = now
            self.loss.update(state.live.losses, state.live.evaluations, state.kl_label())

    @edits_bokeh
    def _animate(self) -> None:
        frame = self.state.frame
        if frame is not None:
            self.animation.show(frame.views, frame.layer_titles, self.player.value / ANIMATION_STEPS,
                                quantised=frame.transient)

    @param.depends("state.ledger", watch=True)
    @edits_bokeh
    def _show_path(self) -> None:
        ledger = self.state.ledger
        self.target_model.show_path(None if ledger is None else np.array([row.point for row in ledger.rows]))

    @param.depends("state.drawing", "state.drawn", watch=True)
    @edits_bokeh
    def _show_drawing(self) -> None:
        drawing, count = self.state.drawing, len(self.state.drawn)
        self.target_model.set_drawing(drawing)
        self.target_model.show_drawn(self.state.drawn)
        self.draw.param.update(value=drawing, color="warning" if drawing else "default")
        self.use.disabled = count < 2
        self.draw_note.visible = drawing or count > 0
        self.draw_note.object = (f"**Drawing:** click or drag on the target to spray points ({count:,} so far), "
                                 "then *Train on it*." if drawing else
                                 f"{count:,} points drawn; *Train on it* makes them the target.")

    @edits_bokeh
    def set_sizes(self, sizes: Sizes) -> None:
        for view in (self.target_model, self.animation, self.loss):
            view.set_sizes(sizes)
        self.target_column.width = sizes.square_px + 10
        self._animate()

    def __panel__(self):
        return pn.FlexBox(self.target_column, self.target_model.model_fig, pn.Column(self.animation.fig, self.player),
                          self.loss.fig, gap="8px")


class StripsView(StateView):
    """The density, ln|det J| and sample strips, each a panel of its own (they hide one by one)."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        images, marks = image_source(), ColumnDataSource({"x": [], "y": []})
        self.density = ImageStrip("density", DENSITY_TITLES["exact"], images, marks)
        self.log_det = ImageStrip("log_det", LOG_DET_TITLES[0], images, marks)
        self.samples = SampleStrip(SAMPLE_TITLES[0], marks)
        for strip in (self.density, self.log_det, self.samples):
            strip.figure.on_event(Tap, lambda event, strip=strip: self.tap(strip, event.x, event.y))
            leave_dimmed_copies_to_the_page(strip.figure.references())  # also when added after the page loaded
        self.cumulative = pn.widgets.RadioButtonGroup(options={"this layer": False, "cumulative Σ_j≤k": True},
                                                      value=state.cumulative, color="default")
        self.cumulative.param.watch(lambda event: setattr(state, "cumulative", event.new), "value")
        self.overlay = pn.widgets.Checkbox(label="show target samples over the densities", value=state.overlay)
        self.overlay.param.watch(lambda event: setattr(state, "overlay", event.new), "value")
        self.slices = SettingsForm(PRESENTATION_SETTINGS, {"time_slices": state.spec.presentation.time_slices},
                                   lambda _name, value: state.set_presentation(time_slices=value), names=("time_slices",))
        self.slices.widgets["time_slices"].css_classes = ["fv-time-slices"]
        self.fit_note = pn.pane.HTML("", margin=(0, 5), styles={"font-size": "13px", "color": "#445"},
                                     css_classes=["fv-fit-note"], sizing_mode="stretch_width")
        self.panels = {"density": pn.Column(pn.FlexBox(self.overlay, self.slices.panel, gap="16px"), self.density.figure,
                                            self.fit_note, sizing_mode="stretch_width"),
                       "log_det": pn.Column(self.cumulative, self.log_det.figure, sizing_mode="stretch_width"),
                       "samples": pn.Column(self.samples.figure, sizing_mode="stretch_width")}
        self._drawn: dict[str, object] = {}  # strip name -> the views it last drew
        self._show_slices_switch()
        self._draw()

    @param.depends("state.spec", watch=True)
    def _show_slices_switch(self) -> None:
        """Offered while the enabled stack has a continuous flow."""
        spec = self.state.spec
        self.slices.panel.visible = any(layer.type == "cnf" and layer.enabled for layer in spec.layers)
        self.slices.show({"time_slices": spec.presentation.time_slices})

    def tap(self, strip, x: float, y: float) -> None:
        """A click on a strip at strip coordinates (x, y): follow the point under it, if it is on a panel."""
        found = strip.locate(x, y)
        if found is not None:
            self.state.follow(*found)

    @param.depends("state.frame", "state.unseen", watch=True)
    @edits_bokeh
    def _new_frame(self) -> None:
        frame = self.state.frame
        # (a live frame that refreshed only the model view carries the views already drawn)
        if frame is not None and any(self._drawn.get(name) is not frame.views for name in self._seen()):
            self._draw()

    def _seen(self) -> list[str]:
        return [name for name in self.panels if name not in self.state.unseen]

    @param.depends("state.cumulative", watch=True)
    @edits_bokeh
    def _draw(self) -> None:
        frame, spec = self.state.frame, self.state.spec
        if frame is None:
            return
        views, titles = frame.views, frame.layer_titles
        seen = self._seen()
        self._drawn.update({name: views for name in seen})
        title, short = DENSITY_TITLES[frame.kind], SHORT_DENSITY_TITLES[frame.kind]
        side = views.log_q.shape[-1]
        if frame.kind == "live" and side < LIVE_STRIP_RESOLUTION:  # a costly flow, drawn coarser
            title, short = (t.replace("live preview", f"live preview at {side}×{side}") for t in (title, short))
        quantised = frame.transient
        fit = frame.kl_by_depth
        images = {"density": lambda: self.density.columns(views, spec.view, titles, quantised=quantised,
                                                          footer=fit is not None),
                  "log_det": lambda: self.log_det.columns(views, spec.view, titles, self.state.cumulative, quantised)}
        parts = {name: columns() for name, columns in images.items() if name in seen}
        if parts and not fits_source(self.density.images, next(iter(parts.values()))):
            # New positions (another stack, another size) replace the source: both columns go together
            parts.update({name: columns() for name, columns in images.items() if name not in parts})
            self._drawn.update({name: views for name in parts})
        if parts:
            send_images(self.density.images, list(parts.values()))
        if "density" in seen:
            self.density.show_fit(fit, frame.kind == "exact")
            self._show_fit_note(fit is not None)
        if "samples" in seen:
            self.samples.update(views, spec.view, titles)
        for name, strip, choices in (("density", self.density, (title, short)), ("log_det", self.log_det, LOG_DET_TITLES),
                                     ("samples", self.samples, SAMPLE_TITLES)):
            if name not in seen:
                continue
            wanted = next((choice for choice in choices if strip.fits(choice)), choices[-1])
            if strip.figure.title.text != wanted:
                strip.figure.title.text = wanted
        self._show_overlay()
        self._show_marks()

    def _show_fit_note(self, shown: bool) -> None:
        kl = self.state.kl_label().replace("true ", "").replace("q)", "q_k)").replace("(q‖", "(q_k‖")
        note = (f"Under each panel: {kl} in nats, the flow cut after k layers against the target, and below it "
                "what layer k changed it by (green: lowered). Exact, from every evaluation point, when paused; "
                f"≈ while training, from {FIT_POINTS_LIVE} of them. In a stack meant to work as a whole "
                "(couplings) the middle depths need not come closer; in a stack of planar or radial layers "
                "each should.") if shown else ""
        if note != self.fit_note.object:
            self.fit_note.object = note
        self.fit_note.visible = shown

    @param.depends("state.overlay", watch=True)
    @edits_bokeh
    def _show_overlay(self) -> None:
        self.density.show_overlay(self.state.live.target_picture.points if self.state.overlay else None)

    @param.depends("state.ledger", watch=True)
    @edits_bokeh
    def _show_marks(self) -> None:
        ledger = self.state.ledger
        points = None if ledger is None else np.array([row.point for row in ledger.rows])
        data = self.density.marks_data(points)
        if data != self.density.marks.data:
            self.density.marks.data = data

    @edits_bokeh
    def set_sizes(self, sizes: Sizes) -> None:
        for strip in (self.density, self.log_det, self.samples):
            strip.set_sizes(sizes)
        self._drawn = {}  # a strip out of view now is drawn at these sizes once it is seen
        self._draw()

    def __panel__(self):
        return pn.Column(*self.panels.values(), sizing_mode="stretch_width")


class LedgerView(StateView):
    """The change of variables of the current stack, and the ledger of the followed point."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.table = pn.pane.HTML(LEDGER_HINT, stylesheets=[LEDGER_CSS], sizing_mode="stretch_width",
                                  styles={"font-size": "14px"})
        self.unfollow = pn.widgets.Button(label="Stop following", visible=False, width=140)
        self.unfollow.on_click(lambda _event: state.unfollow())
        self.formula = pn.pane.LaTeX("", renderer="katex", sizing_mode="stretch_width", styles={"font-size": "15px"})
        self._show()

    @param.depends("state.ledger", "state.spec", watch=True)
    def _show(self) -> None:
        ledger = self.state.ledger
        if ledger is None:
            self.table.object = LEDGER_HINT
        else:
            self.table.object = ledger_html(ledger)
        self.unfollow.visible = ledger is not None
        tex = f"$${formula_tex([layer.type for layer in self.state.spec.layers if layer.enabled], ledger)}$$"
        if self.formula.object != tex:
            self.formula.object = tex

    def set_sizes(self, sizes: Sizes) -> None:
        self.table.styles = {"font-size": f"{sizes.text_font - 1}px"}
        self.formula.styles = {"font-size": f"{sizes.text_font}px"}

    def __panel__(self):
        return pn.Column(self.formula, pn.Column(self.table, self.unfollow, max_width=900, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
