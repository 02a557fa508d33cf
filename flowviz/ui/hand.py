"""Hand mode: move one layer yourself. Its handles (declared in the layer's registry entry) are drawn
on the plane over the density after that layer: points to drag, arrows whose tips drag, a planar
layer's line; numbers on sliders. Every view follows while the hand moves (coarse frames), and the
exact one comes when it lets go.
"""

from __future__ import annotations

import math

import numpy as np
import panel as pn
import param
from bokeh.events import Pan, PanEnd, PanStart
from bokeh.models import ColumnDataSource, CustomJSTickFormatter

from flowviz.core.bases import BASES
from flowviz.core.handles import Handle
from flowviz.core.layers import LAYERS
from flowviz.ui.layout import Sizes
from flowviz.ui.plots import (
    DENSITY_PALETTE,
    ColorScale,
    SquarePlot,
    finite_quantile,
    leave_dimmed_copies_to_the_page,
    nice_ceiling,
)
from flowviz.ui.state import ExperimentState
from flowviz.ui.views import StateView, edits_bokeh

GRAB_RADIUS = 0.08  # a press this near a handle (a fraction of the view's width) takes it
HANDLE_COLOR = "#ff7f0e"
HOW_TO = ("Training is paused. Drag the orange handles on the plane, or move the sliders: every view follows. "
          "▶ Play trains on from what you set; *Undo* puts back the trained values.")


def tip(values: dict, handle: Handle) -> tuple[float, float]:
    """Where a handle is drawn: a point where it is, a vector at its origin plus itself."""
    x, y = values[handle.name]
    if handle.kind == "vector":
        ox, oy = values[handle.origin]
        return ox + x, oy + y
    return x, y


class HandView(StateView):
    """The layer in hand mode: its handles over the density after it, its numbers on sliders, Undo
    and Done. Hidden when no layer is in hand mode."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        view = state.spec.view
        self.plot = SquarePlot("", view)
        self.fig = self.plot.fig
        self.scale = ColorScale(DENSITY_PALETTE, 0.0, 1.0)
        self.image = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.plot.image(self.image, self.scale.mapper, view)
        self.fig.toolbar.active_drag = None  # a drag moves a handle, not the plot
        self.target = ColumnDataSource({"x": [], "y": []})  # where the layer should take the mass
        self.fig.scatter("x", "y", source=self.target, size=2.5, color="#ffffff", alpha=0.45)
        self.lines = ColumnDataSource({"x0": [], "y0": [], "x1": [], "y1": []})
        self.arrows = ColumnDataSource({"x0": [], "y0": [], "x1": [], "y1": [], "angle": []})
        self.points = ColumnDataSource({"x": [], "y": [], "label": []})
        self.fig.segment("x0", "y0", "x1", "y1", source=self.lines, line_color="#ffffff", line_width=2.5,
                         line_dash="dashed")
        self.fig.segment("x0", "y0", "x1", "y1", source=self.arrows, line_color=HANDLE_COLOR, line_width=3)
        self.fig.scatter("x1", "y1", source=self.arrows, marker="triangle", angle="angle", size=13, color=HANDLE_COLOR)
        self.fig.scatter("x", "y", source=self.points, size=15, fill_color=HANDLE_COLOR, line_color="#000000",
                         line_width=1.5)
        self.fig.text("x", "y", "label", source=self.points, text_font_size="13px", text_color="#ffffff",
                      text_align="center", y_offset=-10)  # (above its handle: arrow tips may lie side by side)
        self.line_label = ColumnDataSource({"x": [], "y": [], "text": []})
        self.fig.text("x", "y", "text", source=self.line_label, text_font_size="13px", text_color="#ffffff",
                      x_offset=6)
        leave_dimmed_copies_to_the_page(self.fig.references())  # (it joins the page after app.py's pass)
        self.fig.on_event(PanStart, lambda event: self.grab(event.x, event.y))
        self.fig.on_event(Pan, lambda event: self.drag(event.x, event.y))
        self.fig.on_event(PanEnd, lambda _event: self.let_go())
        self.sliders = pn.Column(margin=0, sizing_mode="stretch_width")
        self.undo = pn.widgets.Button(label="↶ Undo my moves", width=140)
        self.undo.on_click(lambda _event: state.undo_hand())
        self.done = pn.widgets.Button(label="Done", width=80, color="primary")
        self.done.on_click(lambda _event: state.hold(None))
        self.title = pn.pane.Markdown("", margin=(0, 5), styles={"font-size": "14px"})
        self.note = pn.pane.Markdown(HOW_TO, margin=(0, 5), styles={"font-size": "13px"})
        self.score = pn.pane.HTML("", margin=(0, 5), styles={"font-size": "15px"}, css_classes=["fv-hand-score"])
        self.panel = pn.FlexBox(self.fig, pn.Column(self.title, self.note, self.score, self.sliders,
                                                    pn.Row(self.undo, self.done),
                                                    min_width=280, max_width=520, styles={"flex": "1 1 280px"}),
                                gap="12px", visible=False, sizing_mode="stretch_width", css_classes=["fv-hand"])
        # The panel joins the page the first time a part is taken in hand: until then its ~110 Bokeh
        # models would be sent with the page and walked by every message of every frame (Bokeh
        # serialises a patch against all the document's models).
        self.holder = pn.Column(sizing_mode="stretch_width", margin=0)
        self._grabbed: Handle | None = None
        self._grab: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))  # press, tip then
        self._sliders_for: tuple | None = None
        self._setting_sliders = False
        self._view = view
        self._show()

    # -- what is held --------------------------------------------------------------------------------
    def held(self) -> tuple[int, list[Handle]] | None:
        """(the depth after the held part in the views: 0 for the base; its handles), or None
        outside hand mode."""
        state = self.state
        part, frame = state.held_part(), state.frame
        if part is None or frame is None:
            return None
        if part == "base":
            return 0, list(BASES[state.spec.base.name].info.handles)
        position = state.layer_ids.index(part)
        depths = [k for k, at in enumerate(frame.views.layers, start=1) if at == position]
        if not depths:
            return None
        return depths[-1], list(LAYERS[state.spec.layers[position].type].info.handles)

    def _title(self) -> str:
        state = self.state
        part = state.held_part()
        if part == "base":
            return f"The base by hand: {BASES[state.spec.base.name].info.title}"
        position = state.layer_ids.index(part)
        return f"Layer {position + 1} by hand: {LAYERS[state.spec.layers[position].type].info.title}"

    @param.depends("state.spec", "state.frame", watch=True)
    @edits_bokeh
    def _show(self) -> None:
        held = self.held()
        self.panel.visible = held is not None
        if held is None:
            self._sliders_for = None
            return
        if not self.holder.objects:
            self.holder.objects = [self.panel]
        if self._view != self.state.spec.view:  # (a preset or a link with another view box)
            self._view = self.state.spec.view
            self.plot.set_view(self._view)
        points = self.state.live.target_picture.points
        if len(self.target.data["x"]) != len(points) or not np.array_equal(self.target.data["x"], points[:, 0]):
            self.target.data = {"x": points[:, 0], "y": points[:, 1]}
        depth, handles = held
        state = self.state
        part = state.held_part()
        values = state.live.handles(part)
        self.title.object = f"**{self._title()}**"
        self.fig.title.text = f"q_{depth} after it, with its handles" if depth else "q_0, the base, with its handles"
        self._draw_density(state.frame.views.log_q[depth])
        self._draw_handles(values, handles)
        self._show_score(depth)
        self._show_sliders(part, values, [h for h in handles if h.kind == "number"])

    def _show_score(self, depth: int) -> None:
        """The KL after the held layer (what the hand is trying to lower) and before it; for the base,
        its own KL and the whole flow's."""
        kl, label = self.state.frame.kl_by_depth, self.state.kl_label()
        if kl is None:
            text = "The target has no known density here, so no KL to aim at: compare with the target's dots."
        else:
            name = label.replace("true ", "").replace("q)", f"q_{depth})").replace("(q‖", f"(q_{depth}‖")
            sign = "≈ " if self.state.frame.kind != "exact" else ""
            where, other = ("after this layer", f"before it: {kl[depth - 1]:.3f}") if depth else \
                ("of the base", f"after the whole flow: {kl[-1]:.3f}")
            text = (f"{name} {where}: <b>{sign}{kl[depth]:.3f} nats</b> "
                    f"<span style='color:#556'>({other})</span>")
        if text != self.score.object:
            self.score.object = text

    def _draw_density(self, log_q: np.ndarray) -> None:
        density = np.exp(log_q).astype(np.float32)
        self.scale.mapper.high = nice_ceiling(finite_quantile(density, 0.995))
        self.image.data = {"image": [density]}

    def _draw_handles(self, values: dict, handles: list[Handle]) -> None:
        view = self.state.spec.view
        reach = math.hypot(view.width, view.height)
        lines = {"x0": [], "y0": [], "x1": [], "y1": []}
        arrows = {"x0": [], "y0": [], "x1": [], "y1": [], "angle": []}
        points = {"x": [], "y": [], "label": []}
        for handle in handles:
            if handle.kind == "number":
                continue
            x, y = tip(values, handle)
            points["x"].append(x)
            points["y"].append(y)
            points["label"].append("" if handle.line_normal else handle.mark or handle.name)
            if handle.kind == "vector":
                ox, oy = values[handle.origin]
                arrows["x0"].append(ox)
                arrows["y0"].append(oy)
                arrows["x1"].append(x)
                arrows["y1"].append(y)
                arrows["angle"].append(math.atan2(y - oy, x - ox) - math.pi / 2)
            if handle.line_normal:
                nx, ny = values[handle.line_normal]
                length = math.hypot(nx, ny) or 1.0
                dx, dy = -ny / length * reach, nx / length * reach
                lines["x0"].append(x - dx)
                lines["y0"].append(y - dy)
                lines["x1"].append(x + dx)
                lines["y1"].append(y + dy)
                # its name on the line, a third of the view's height along it from the handle
                along = 0.3 * view.height / reach
                lines_label = (x + dx * along * (1 if dy >= 0 else -1), y + abs(dy) * along)
                self.line_label.data = {"x": [lines_label[0]], "y": [lines_label[1]], "text": [handle.mark]}
        for source, data in ((self.lines, lines), (self.arrows, arrows), (self.points, points)):
            if source.data != data:
                source.data = data

    def _show_sliders(self, part: int | str, values: dict, numbers: list[Handle]) -> None:
        key = (part, tuple(h.name for h in numbers))
        if key != self._sliders_for:
            self._sliders_for = key
            self._widgets = {handle.name: self._slider(handle) for handle in numbers}
            self.sliders.objects = list(self._widgets.values())
        self._setting_sliders = True  # the values the layer has now: not a move
        try:
            for handle in numbers:
                value = values[handle.name]
                self._widgets[handle.name].value = math.log10(value) if handle.log_scale else value
        finally:
            self._setting_sliders = False

    def _slider(self, handle: Handle) -> pn.widgets.FloatSlider:
        if handle.log_scale:  # a slope or a scale: the slider runs over log10, its label shows the value
            slider = pn.widgets.FloatSlider(label=handle.label, start=math.log10(handle.low), end=math.log10(handle.high),
                                            step=0.01, format=CustomJSTickFormatter(code="return (10 ** tick).toPrecision(3)"),
                                            sizing_mode="stretch_width")
        else:
            slider = pn.widgets.FloatSlider(label=handle.label, start=handle.low, end=handle.high,
                                            step=(handle.high - handle.low) / 400, sizing_mode="stretch_width")
        slider.param.watch(lambda event: self._slid(handle, event.new, final=False), "value")
        slider.param.watch(lambda event: self._slid(handle, event.new, final=True), "value_throttled")
        return slider

    def _slid(self, handle: Handle, value: float, final: bool) -> None:
        if self._setting_sliders:
            return
        self.state.move_hand({handle.name: 10**value if handle.log_scale else value}, final=final)

    # -- dragging ------------------------------------------------------------------------------------
    def grab(self, x: float, y: float) -> Handle | None:
        """A press at (x, y): take the nearest handle within reach (a point or an arrow's tip, or a
        line anywhere along it), if any."""
        held = self.held()
        self._grabbed = None
        if held is None:
            return None
        values = self.state.live.handles(self.state.held_part())
        best = GRAB_RADIUS * self.state.spec.view.width
        for handle in held[1]:
            if handle.kind == "number":
                continue
            hx, hy = tip(values, handle)
            distance = math.hypot(hx - x, hy - y)
            if handle.line_normal:  # the whole line is the handle
                nx, ny = values[handle.line_normal]
                distance = min(distance, abs((x - hx) * nx + (y - hy) * ny) / (math.hypot(nx, ny) or 1.0))
            if distance <= best:
                self._grabbed, best = handle, distance
                self._grab = ((x, y), (hx, hy))
        return self._grabbed

    def drag(self, x: float, y: float) -> None:
        """The pointer at (x, y): the grabbed handle moves with it, by as much as the pointer moved
        since the press (so it does not jump to the pointer)."""
        handle = self._grabbed
        if handle is None:
            return
        (px, py), (hx, hy) = self._grab
        to = (hx + x - px, hy + y - py)
        if handle.kind == "vector":
            ox, oy = self.state.live.handles(self.state.held_part())[handle.origin]
            to = (to[0] - ox, to[1] - oy)
        self.state.move_hand({handle.name: to})

    def let_go(self) -> None:
        if self._grabbed is not None:
            self._grabbed = None
            self.state.move_hand({}, final=True)

    def set_sizes(self, sizes: Sizes) -> None:
        self.plot.set_sizes(sizes)

    def __panel__(self):
        return self.holder
