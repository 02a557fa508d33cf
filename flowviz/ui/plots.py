"""The explorer's square plots, in Bokeh: the target beside the model, the flow through depth, the loss.

Plain Bokeh objects, no Panel and no session state: the views in views.py own them and feed them
numpy. Colour scales are fixed mappers whose `high` moves only when the data outgrow it by a clear
margin, so colours do not flicker between frames. Exact (paused) images travel as float32, so a
hover reads the computed value; live and preview images travel as one byte per pixel, the index of
the pixel's colour (`ColorScale`), a quarter of the bytes, and a hover reads the value back to
within half a colour step, marked ≈.
"""

from __future__ import annotations

import math

import numpy as np
from bokeh.models import ColumnDataSource, CustomJSHover, GlyphRenderer, HoverTool, LinearColorMapper, Range1d
from bokeh.palettes import RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure

from flowviz.core.grid import GridViews
from flowviz.core.spec import ViewSpec
from flowviz.figures import start_colors
from flowviz.ui.layout import Sizes

LEVELS = 255  # colours in a scale: a byte per pixel holds the index 0..254, and 255 for "not a number"
DENSITY_PALETTE = list(interp_palette(Viridis256, LEVELS))
LOG_DET_PALETTE = list(interp_palette(RdBu11, LEVELS))  # Bokeh's RdBu runs blue to red: matplotlib's RdBu_r
NAN_COLOR = "#ffffff"

# The value under the pointer: as computed for an exact image; from its colour index for a byte image.
_HOVER_JS = """
if (!glyph.color_mapper.tags.includes("indices")) return value.toFixed(3) + unit;
if (value >= LEVELS) return "not a number";
const step = (scale.high - scale.low) / LEVELS;
return "≈ " + (scale.low + (value + 0.5) * step).toFixed(3) + " ± " + (step / 2).toPrecision(1) + unit;
""".replace("LEVELS", str(LEVELS))


class ColorScale:
    """A colour scale in real units (`mapper`, the one colour bars show) and its byte form: `encode`
    turns values into colour indices, which a renderer drawn with a `painter()` shows in the same
    colours once `draw_with` has set it to indices.

    Example:
        >>> scale = ColorScale(DENSITY_PALETTE, 0.0, 1.0)
        >>> scale.encode(np.array([0.0, 0.5, 1.0, 7.0, np.nan, -0.3, -np.inf, np.inf]), quantised=True).tolist()
        [0, 127, 254, 254, 255, 0, 0, 254]
    """

    def __init__(self, palette: list[str], low: float, high: float):
        self.mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=NAN_COLOR)

    def painter(self) -> LinearColorMapper:
        """A mapper of its own for one image renderer that may show colour indices. `draw_with`
        changes it in place: a page whose renderer got a different mapper object kept colouring new
        images with the old one (Chromium, Bokeh 3.9: live frames' indices drawn as densities)."""
        return LinearColorMapper(palette=self.mapper.palette, low=self.mapper.low, high=self.mapper.high,
                                 nan_color=NAN_COLOR)

    def encode(self, values: np.ndarray, quantised: bool) -> np.ndarray:
        if not quantised:
            return values.astype(np.float32)
        low, high = self.mapper.low, self.mapper.high
        # Clipped to [0, LEVELS - 1] first, the cast's truncation is the floor; ±inf clip to the
        # ends. Three passes over the image where floor and nan_to_num made five (39 µs against
        # 108 for a 9-panel 64² strip, on the event loop every session shares).
        with np.errstate(invalid="ignore"):
            scaled = (values - low) * (LEVELS / (high - low))
            out = np.clip(scaled, 0, LEVELS - 1, out=scaled).astype(np.uint8)
        out[np.isnan(values)] = LEVELS
        return out

    def draw_with(self, renderer, quantised: bool) -> None:
        """Set `renderer`'s painter to colour by value (this scale's range), or by the byte indices
        `encode(..., quantised=True)` makes: index i is colour i, LEVELS (not a number) above them."""
        if quantised:
            wanted = {"low": -0.5, "high": LEVELS - 0.5, "high_color": NAN_COLOR, "tags": ["indices"]}
        else:
            wanted = {"low": self.mapper.low, "high": self.mapper.high, "high_color": None, "tags": []}
        paint = renderer.glyph.color_mapper
        changed = {key: value for key, value in wanted.items() if getattr(paint, key) != value}
        if changed:
            paint.update(**changed)

    def hover(self, renderer, label: str, unit: str = "", field: str = "image") -> HoverTool:
        """A tooltip with the value under the pointer: `field` is the image column the renderer draws."""
        formatter = CustomJSHover(args={"glyph": renderer.glyph, "scale": self.mapper,
                                        "unit": unit}, code=_HOVER_JS)
        return HoverTool(renderers=[renderer], tooltips=[(label, f"@{field}{{custom}}")],
                         formatters={f"@{field}": formatter})


def nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at or above `value` (colour bar limits that read well)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def finite_quantile(values: np.ndarray, q: float, empty: float = 1.0) -> float:
    """The q-quantile of the finite values (`empty` if there are none), as the order statistic at or
    below it: a colour scale's top needs no interpolation, and a partition takes half of
    np.quantile's time (0.27 against 0.56 ms for a 10-panel 64² strip), on the event loop every
    session shares, for every strip and animation frame.

    Example:
        >>> finite_quantile(np.array([3.0, np.nan, 1.0, 2.0, np.inf, 4.0]), 0.5)
        2.0
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return empty
    k = int(q * (finite.size - 1))
    return float(np.partition(finite, k)[k])


def steady_high(current: float, wanted: float) -> float:
    """Keep a colour scale's top unless the data need more, or have shrunk to under a third of it."""
    wanted = nice_ceiling(wanted)
    return wanted if wanted > current or wanted < current / 3 else current


def plane_figure(**options) -> figure:
    """A figure that is a picture of the plane: no axes, grid, outline or visible toolbar.

    Made without them, not hidden: an axis brings its ticker, formatter, labels policy and grid,
    and the default tools their annotations, ~19 models a figure that a page builds, sends and
    serialises every frame's patch against. The pan tool stays: a drag pans the picture, as it did
    when the toolbar was only hidden, and drawing and handles take it over while they run.

    Example:
        >>> fig = plane_figure(width=200, height=200)
        >>> fig.axis, [type(tool).__name__ for tool in fig.tools], fig.toolbar_location
        ([], ['PanTool'], None)
    """
    fig = figure(x_axis_type=None, y_axis_type=None, tools="pan", toolbar_location=None, **options)
    fig.outline_line_color = None
    fig.min_border = 4
    fig.title.text_font_size = "15px"
    return fig


def leave_dimmed_copies_to_the_page(models) -> None:
    """Let BokehJS make each glyph renderer's nonselection and muted glyphs ("auto"), which Bokeh's
    plotting API otherwise makes here as two models more per renderer: ~90 of a page's ~690, which
    every frame's patch and every page answer is serialised against. Nothing here selects or mutes.

    Example:
        >>> fig = figure(); renderer = fig.scatter([0], [0])
        >>> leave_dimmed_copies_to_the_page(fig.references())
        >>> renderer.nonselection_glyph, renderer.muted_glyph, type(renderer.glyph).__name__
        ('auto', 'auto', 'Scatter')
    """
    for model in list(models):
        if isinstance(model, GlyphRenderer):
            model.nonselection_glyph = model.muted_glyph = "auto"


def packed_colors(samples0: np.ndarray) -> np.ndarray:
    """start_colors as packed RGBA uint32, which BokehJS uses without parsing a CSS string per point."""
    rgb = (start_colors(samples0) * 255).round().astype(np.uint32)
    return (rgb[:, 0] << 24) | (rgb[:, 1] << 16) | (rgb[:, 2] << 8) | np.uint32(255)


def draw_ring(fig, source: ColumnDataSource, size: int) -> None:
    """A ring that reads on any colour map: black under white."""
    fig.scatter("x", "y", source=source, size=size, fill_color=None, line_color="#000000", line_width=4.5)
    fig.scatter("x", "y", source=source, size=size, fill_color=None, line_color="#ffffff", line_width=2)


def depth_label(k: int, titles: list[str], width: int = 22) -> str:
    """"k = 2" over the layer's title, cut to `width` characters."""
    title = "base" if k == 0 else titles[k - 1]
    return f"k = {k}\n{title if len(title) <= width else title[:width - 1] + '…'}"


class SquarePlot:
    """A square figure of the view box with images that fill it."""

    def __init__(self, title: str, view: ViewSpec):
        self.fig = plane_figure(title=title, width=250, height=280, match_aspect=True,
                                x_range=Range1d(view.xmin, view.xmax), y_range=Range1d(view.ymin, view.ymax))
        self.fig.outline_line_color = "#d4d9e2"
        self.image_renderers: list = []

    def image(self, source: ColumnDataSource, mapper: LinearColorMapper, view: ViewSpec, **options):
        renderer = self.fig.image("image", x=view.xmin, y=view.ymin, dw=view.width, dh=view.height, source=source,
                                  color_mapper=mapper, **options)
        self.image_renderers.append(renderer)
        return renderer

    def set_view(self, view: ViewSpec) -> None:
        self.fig.x_range.start, self.fig.x_range.end = view.xmin, view.xmax
        self.fig.y_range.start, self.fig.y_range.end = view.ymin, view.ymax
        for renderer in self.image_renderers:
            renderer.glyph.update(x=view.xmin, y=view.ymin, dw=view.width, dh=view.height)

    def set_sizes(self, sizes: Sizes) -> None:
        self.fig.width, self.fig.height = sizes.square_px, sizes.square_px + 30
        self.fig.title.text_font_size = sizes.title_css


class TargetAndModel:
    """The target's density beside the model's q_K, on one colour scale; points drawn by hand and
    the followed point's path z_0 .. z_K on top."""

    def __init__(self, view: ViewSpec):
        self.scale = ColorScale(DENSITY_PALETTE, 0.0, 1.0)
        self.mapper = self.scale.mapper
        self.target_plot, self.model_plot = SquarePlot("Target p", view), SquarePlot("Model q_K", view)
        self.target_fig, self.model_fig = self.target_plot.fig, self.model_plot.fig
        self.target = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.model = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.points = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
        self._target_image = self.target_plot.image(self.target, self.mapper, view)
        self.model_image = self.model_plot.image(self.model, self.scale.painter(), view)
        self.overlay = self.model_fig.scatter("x", "y", source=self.points, size=2.5, color="#ffffff", alpha=0.6,
                                              visible=False)
        self._target_hover = self.scale.hover(self._target_image, "density")
        self.target_fig.add_tools(self._target_hover)
        self.model_fig.add_tools(self.scale.hover(self.model_image, "density"))
        self.drawn = ColumnDataSource({"x": np.zeros(0), "y": np.zeros(0)})
        self.target_fig.scatter("x", "y", source=self.drawn, size=4, color="#ff7f0e", line_color=None, alpha=0.85)
        self.path = ColumnDataSource({"x": [], "y": []})
        self.end = ColumnDataSource({"x": [], "y": []})
        self.model_fig.line("x", "y", source=self.path, line_color="#ffffff", line_width=1.5, line_dash="dashed")
        self.model_fig.scatter("x", "y", source=self.path, size=4, color="#ffffff", line_color="#000000")
        for fig in (self.target_fig, self.model_fig):
            draw_ring(fig, self.end, 14)

    def set_drawing(self, on: bool) -> None:
        """While drawing, a drag on the target paints instead of panning, over a faded target, with no tooltip."""
        self.target_fig.toolbar.active_drag = None if on else "auto"
        self._target_hover.renderers = [] if on else [self._target_image]
        self._target_image.glyph.global_alpha = 0.3 if on else 1.0

    def show_drawn(self, points: list[tuple[float, float]]) -> None:
        """The drawn points; only the new ones travel when the drawing grew."""
        shown = len(self.drawn.data["x"])
        if len(points) < shown or not points:
            self.drawn.data = {"x": np.array([p[0] for p in points]), "y": np.array([p[1] for p in points])}
        elif len(points) > shown:
            new = np.array(points[shown:])
            self.drawn.stream({"x": new[:, 0], "y": new[:, 1]})

    def show_path(self, points: np.ndarray | None) -> None:
        if points is None:
            self.path.data = self.end.data = {"x": [], "y": []}
            return
        self.path.data = {"x": points[:, 0].tolist(), "y": points[:, 1].tolist()}
        self.end.data = {"x": [float(points[-1, 0])], "y": [float(points[-1, 1])]}

    def set_sizes(self, sizes: Sizes) -> None:
        self.target_plot.set_sizes(sizes)
        self.model_plot.set_sizes(sizes)

    def set_target(self, density: np.ndarray, points: np.ndarray, view: ViewSpec) -> None:
        self.target_plot.set_view(view)
        self.model_plot.set_view(view)
        self.mapper.high = nice_ceiling(float(np.quantile(density, 0.998)) if density.size else 1.0)
        self.target.data = {"image": [density.astype(np.float32)]}
        self.points.data = {"x": points[:, 0].astype(np.float32), "y": points[:, 1].astype(np.float32)}

    def update(self, log_q: np.ndarray, quantised: bool = False) -> None:
        """The model's ln q_K on the view grid (any resolution); `quantised`: as colour indices."""
        self.scale.draw_with(self.model_image, quantised)
        self.model.data.update(image=[self.scale.encode(np.exp(log_q), quantised)])


class DepthAnimation:
    """The flow through depth: samples glide and the density cross-fades from k to k+1 as t runs 0..K."""

    def __init__(self, view: ViewSpec):
        self.plot = SquarePlot("Through the flow: base → output", view)
        self.fig = self.plot.fig
        self.scale = ColorScale(DENSITY_PALETTE, 0.0, 1.0)
        self.mapper = self.scale.mapper
        # Depth k under depth k+1, the upper one faded in by the fractional part of t.
        self.images = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)] * 2, "alpha": [1.0, 0.0]})
        self.renderer = self.plot.image(self.images, self.scale.painter(), view, global_alpha="alpha")
        self.points = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32),
                                        "color": np.zeros(0, np.uint32)})
        self.fig.scatter("x", "y", source=self.points, color="color", size=3, line_color=None, alpha=0.9)
        self.caption = ColumnDataSource({"x": [view.xmin], "y": [view.ymax], "text": [""]})
        self.caption_glyph = self.fig.text("x", "y", "text", source=self.caption, text_font_size="13px",
                                           text_color="#fff", text_baseline="top", x_offset=6, y_offset=4).glyph
        self._colors_for = -1

    def set_sizes(self, sizes: Sizes) -> None:
        self.plot.set_sizes(sizes)
        self.caption_glyph.text_font_size = sizes.font_css

    def set_view(self, view: ViewSpec) -> None:
        self.plot.set_view(view)
        self.caption.data = {"x": [view.xmin], "y": [view.ymax], "text": self.caption.data["text"]}

    def show(self, views: GridViews, titles: list[str], t: float, quantised: bool = False) -> None:
        """Draw depth t (0 = base, K = output; fractions blend the two neighbouring depths);
        `quantised`: the images as colour indices."""
        depth = views.log_q.shape[0] - 1
        t = min(max(t, 0.0), float(depth))
        k = min(math.floor(t), max(depth - 1, 0))
        f = t - k if depth else 0.0
        density = np.exp(views.log_q)
        self.mapper.high = steady_high(self.mapper.high, finite_quantile(density, 0.995))
        upper = min(k + 1, depth)
        self.scale.draw_with(self.renderer, quantised)
        self.images.data = {"image": [self.scale.encode(density[k], quantised), self.scale.encode(density[upper], quantised)],
                            "alpha": [1.0, float(f)]}
        points = views.samples_between(k, f)
        clock = views.time_between(k, f) if f > 0 else None
        if self._colors_for != points.shape[0]:
            self.points.data = {"x": points[:, 0], "y": points[:, 1], "color": packed_colors(views.samples[0])}
            self._colors_for = points.shape[0]
        else:
            self.points.data.update(x=points[:, 0], y=points[:, 1])
        caption = f"depth {t:.2f} · " + depth_label(round(t), titles, 30).replace("\n", ": ")
        if clock is not None:
            caption += f" · ODE time {clock:.2f}"
        if self.caption.data["text"] != [caption]:
            self.caption.data.update(text=[caption])


def steady_span(current: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """An axis span that holds [low, high] on round numbers and moves only when the data leave it or
    fill less than a third of it. A span that followed the data moved the loss chart's ticks with every
    update, and Bokeh then laid the whole page out again: ~100 ms of the page's time per update.

    Example:
        >>> steady_span((0.0, 1.0), 2.61, 4.37)
        (2.5, 4.5)
        >>> steady_span((2.5, 4.5), 2.58, 4.37), steady_span((2.5, 4.5), 2.31, 4.37)
        ((2.5, 4.5), (2.0, 4.5))
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return current
    if current[0] <= low and high <= current[1] and (high - low) * 3 >= current[1] - current[0]:
        return current
    step = nice_ceiling(max(high - low, 1e-6) / 4) / 2
    return math.floor(low / step) * step, math.ceil(high / step) * step + (step if high == low else 0.0)


class LossChart:
    """Training loss and, every evaluation, the held-out NLL and the true KL (all in nats), on axes
    the server sets (`steady_span`): steps up to a round number, values between round numbers."""

    def __init__(self):
        self.fig = figure(title="Loss (nats)", width=380, height=280, x_axis_label="step", y_axis_label="nats",
                          tools="pan,wheel_zoom,reset", toolbar_location="above",
                          x_range=Range1d(0, 10), y_range=Range1d(0, 1))
        self.train = ColumnDataSource({"step": np.zeros(0, np.int32), "loss": np.zeros(0, np.float32)})
        self.evals = ColumnDataSource({"step": np.zeros(0, np.int32), "nll": np.zeros(0, np.float32),
                                       "kl": np.zeros(0, np.float32), "ess": np.zeros(0, np.float32)})
        self.fig.line("step", "loss", source=self.train, color="#9aa6b8", legend_label="training loss")
        nll = self.fig.line("step", "nll", source=self.evals, color="#2a6fdb", line_width=2, legend_label="held-out NLL")
        self.kl_line = self.fig.line("step", "kl", source=self.evals, color="#d2691e", line_width=2, legend_label="true KL")
        # The effective sample size is a fraction (0 to 1), drawn on the same axis: near 1 is a good fit
        self.ess_line = self.fig.line("step", "ess", source=self.evals, color="#2e8b57", line_width=2, line_dash="dashed",
                                      legend_label="ESS (0 to 1)")
        self.fig.legend.location = "top_right"
        self.fig.add_tools(HoverTool(tooltips=[("step", "@step"), ("value", "$y{0.000} nats")], mode="vline",
                                     renderers=[nll, self.kl_line]))
        self.sent_train = 0
        self.sent_evals = 0
        self._span = (0.0, 1.0)
        self._low, self._high = math.inf, -math.inf  # of every value sent on this curve
        self.set_sizes(Sizes.of(projector=False))

    def set_sizes(self, sizes: Sizes) -> None:
        self.fig.width, self.fig.height = sizes.loss_px
        self.fig.title.text_font_size = sizes.title_css
        self.fig.axis.axis_label_text_font_size = self.fig.axis.major_label_text_font_size = sizes.font_css
        self.fig.legend.label_text_font_size = sizes.font_css

    def clear(self) -> None:
        self.train.data = {"step": np.zeros(0, np.int32), "loss": np.zeros(0, np.float32)}
        self.evals.data = {"step": np.zeros(0, np.int32), "nll": np.zeros(0, np.float32), "kl": np.zeros(0, np.float32),
                           "ess": np.zeros(0, np.float32)}
        self.sent_train = self.sent_evals = 0
        self._low, self._high = math.inf, -math.inf

    def update(self, losses: list[float], evaluations: list, kl_label: str) -> None:
        """Send what is new of `losses` (step i + 1's loss at i) and `evaluations`; a shorter
        history than was sent is a new curve."""
        if len(losses) < self.sent_train or len(evaluations) < self.sent_evals:
            self.clear()
        n = len(losses)
        if n > self.sent_train:
            # Long runs: thin the line to about 5000 points (every step still counts in the metrics).
            stride = max(1, n // 5000)
            s = np.arange(self.sent_train + 1, n + 1, dtype=np.int32)
            v = np.asarray(losses[self.sent_train:n], np.float32)
            keep = (s % stride) == 0
            self.train.stream({"step": s[keep], "loss": v[keep]}, rollover=6000)
            self._extend(v)
            self.sent_train = n
        if len(evaluations) > self.sent_evals:
            new = evaluations[self.sent_evals:]
            self.evals.stream({"step": np.array([e.step for e in new], np.int32),
                               "nll": np.array([e.test_nll for e in new], np.float32),
                               "kl": np.array([np.nan if e.kl is None else e.kl for e in new], np.float32),
                               "ess": np.array([np.nan if e.ess is None else e.ess for e in new], np.float32)})
            self._extend(np.array([[e.test_nll, np.nan if e.kl is None else e.kl, np.nan if e.ess is None else e.ess]
                                   for e in new], np.float64))
            self.sent_evals = len(evaluations)
        self._set_axes(n)
        self.kl_line.visible = self.ess_line.visible = kl_label != ""
        if self.fig.legend and self.fig.legend[0].items:
            self.fig.legend[0].items[2].label = {"value": kl_label or "true KL"}

    def _extend(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        if finite.size:
            self._low, self._high = min(self._low, float(finite.min())), max(self._high, float(finite.max()))

    def _set_axes(self, steps: int) -> None:
        """Steps up to a round number (1, 2 or 5 times a power of ten), values on a steady span; set
        only when they change, and as the reset tool's span too."""
        x_end = nice_ceiling(max(steps, 10))
        self._span = steady_span(self._span, self._low, self._high)
        for axis, (start, end) in ((self.fig.x_range, (0, x_end)), (self.fig.y_range, self._span)):
            if (axis.start, axis.end) != (start, end):
                axis.update(start=start, end=end, reset_start=start, reset_end=end)
