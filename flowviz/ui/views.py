"""The explorer's plots, in Bokeh: per-depth strips, target against model, the depth animation, the loss.

Each strip is one figure that tiles the K+1 depths (wrapping after `MAX_COLUMNS`), so a frame is one
column update per strip instead of dozens of figures. Colour scales are fixed mappers whose `high`
moves only when the data outgrow it by a clear margin, so colours do not flicker between frames.
Every update is plain numpy float32, sent as binary buffers.
"""

from __future__ import annotations

import math

import numpy as np
from bokeh.models import (ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Range1d)
from bokeh.plotting import figure
from matplotlib import colormaps
from matplotlib.colors import to_hex

from flowviz.core.grid import GridViews
from flowviz.figures import start_colors

MAX_COLUMNS = 9
STRIP_PX = 1180  # a strip's width: fits beside the sidebar on a 1600-pixel screen
MAX_CELL_PX = 240
GAP = 0.08  # gap between panels, as a fraction of the view width
LABEL = 0.3  # room above each panel for its two-line label, as a fraction of the view height

DENSITY_PALETTE = [to_hex(c) for c in colormaps["viridis"](np.linspace(0, 1, 256))]
LOG_DET_PALETTE = [to_hex(c) for c in colormaps["RdBu_r"](np.linspace(0, 1, 256))]
FONT = "13px"
PROJECTOR_FONT = "20px"
PROJECTOR_STRIP_PX = 1560  # a strip's width with the sidebar hidden, on a 1920-pixel projector
PROJECTOR_SQUARE_PX = 360


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at or above `value` (colour bar limits that read well)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _steady_high(current: float, wanted: float) -> float:
    """Keep a colour scale's top unless the data need more, or have shrunk to under a third of it."""
    wanted = _nice_ceiling(wanted)
    return wanted if wanted > current or wanted < current / 3 else current


def _style(fig) -> None:
    fig.toolbar_location = None
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = None
    fig.min_border = 4
    fig.title.text_font_size = "15px"


class Layout:
    """Where panel k of a strip sits: columns wrap after MAX_COLUMNS; labels sit above each panel."""

    def __init__(self, view: dict, depths: int):
        self.x0, self.y0 = view["xmin"], view["ymin"]
        self.w, self.h = view["xmax"] - view["xmin"], view["ymax"] - view["ymin"]
        self.depths = depths
        self.columns = min(depths, MAX_COLUMNS)
        self.rows = math.ceil(depths / self.columns)

    def offset(self, k: int) -> tuple[float, float]:
        column, row = k % self.columns, k // self.columns
        return column * self.w * (1 + GAP), -row * self.h * (1 + LABEL + GAP)

    def x_range(self) -> tuple[float, float]:
        return self.x0 - 0.02 * self.w, self.x0 + self.columns * self.w * (1 + GAP) - GAP * self.w + 0.02 * self.w

    def y_range(self) -> tuple[float, float]:
        bottom = self.y0 - (self.rows - 1) * self.h * (1 + LABEL + GAP)
        return bottom - 0.02 * self.h, self.y0 + self.h * (1 + LABEL)

    def cell_px(self, colorbar_px: int, strip_px: int = STRIP_PX) -> int:
        span = (self.x_range()[1] - self.x_range()[0]) / self.w
        return min(int(MAX_CELL_PX * strip_px / STRIP_PX), int((strip_px - colorbar_px) / span))

    def size_px(self, colorbar_px: int, strip_px: int = STRIP_PX) -> tuple[int, int]:
        cell = self.cell_px(colorbar_px, strip_px)
        width = int(cell * (self.x_range()[1] - self.x_range()[0]) / self.w)
        height = int(cell * (self.y_range()[1] - self.y_range()[0]) / self.h)
        return width, height

    def locate(self, x: float, y: float) -> tuple[int, tuple[float, float]] | None:
        """The panel k under a strip coordinate, and the point of the plane there (None: a gap)."""
        for k in range(self.depths):
            dx, dy = self.offset(k)
            px, py = x - dx, y - dy
            if self.x0 <= px <= self.x0 + self.w and self.y0 <= py <= self.y0 + self.h:
                return k, (px, py)
        return None

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Points outside the view box become NaN (they would stray into the neighbouring panel)."""
        out = points.copy()
        outside = ((points[..., 0] < self.x0) | (points[..., 0] > self.x0 + self.w)
                   | (points[..., 1] < self.y0) | (points[..., 1] > self.y0 + self.h))
        out[outside] = np.nan
        return out


def depth_label(k: int, titles: list[str], width: int = 22) -> str:
    """"k = 2" over the layer's title, cut to `width` characters."""
    title = "base" if k == 0 else titles[k - 1]
    return f"k = {k}\n{title if len(title) <= width else title[:width - 1] + '…'}"


class DepthStrip:
    """One row of panels per wrap, one panel per depth k = 0..K: an image strip or the sample strip."""

    def __init__(self, kind: str, title: str, images: ColumnDataSource | None = None,
                 marks: ColumnDataSource | None = None):
        self.kind = kind  # "density", "log_det" or "samples"
        self.layout: Layout | None = None
        self.strip_px = STRIP_PX
        self.font = FONT
        self.figure = figure(title=title, match_aspect=True, x_range=Range1d(0, 1), y_range=Range1d(0, 1),
                             width=900, height=200)  # canvas: WebGL without a GPU costs more CPU than it saves
        _style(self.figure)
        self.labels = ColumnDataSource({"x": [], "y": [], "text": []})
        self.label_glyph = self.figure.text("x", "y", "text", source=self.labels, text_font_size=FONT,
                                            text_color="#334", text_baseline="bottom").glyph
        if kind == "samples":
            # Samples and grid lines share one source (one message per frame): both are padded with
            # NaN to a common length, which neither glyph draws.
            empty = np.zeros(0, np.float32)
            self.points = ColumnDataSource({"x": empty, "y": empty, "color": np.zeros(0, np.uint32), "lx": empty,
                                            "ly": empty})
            self.figure.line("lx", "ly", source=self.points, line_color="#b9c0cc", line_width=0.8)
            self.figure.scatter("x", "y", source=self.points, color="color", size=3, line_color=None)
            self.frames = ColumnDataSource({"x": [], "y": [], "w": [], "h": []})
            self.figure.rect("x", "y", "w", "h", source=self.frames, fill_color=None, line_color="#d4d9e2")
            self._colors_for: int | None = None
        else:
            palette = DENSITY_PALETTE if kind == "density" else LOG_DET_PALETTE
            self.mapper = LinearColorMapper(palette=palette, low=0.0 if kind == "density" else -1.0, high=1.0,
                                            nan_color="#ffffff")
            # Both image strips read one source (one message per frame), each its own column.
            self.images = images if images is not None else ColumnDataSource(
                {"density": [], "log_det": [], "x": [], "y": [], "dw": [], "dh": []})
            renderer = self.figure.image(kind, x="x", y="y", dw="dw", dh="dh", source=self.images,
                                         color_mapper=self.mapper)
            unit = "per unit area" if kind == "density" else "nats"
            self.figure.add_layout(ColorBar(color_mapper=self.mapper, width=12, title=unit,
                                            title_text_font_size=FONT, major_label_text_font_size=FONT), "right")
            name = "q_k" if kind == "density" else "ln|det J|"
            fmt = "{0.000}" if kind == "density" else "{0.000} nats"
            self.figure.add_tools(HoverTool(renderers=[renderer], tooltips=[(name, "@image" + fmt)]))
            self.overlay = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
            self.overlay_renderer = self.figure.scatter("x", "y", source=self.overlay, size=2, color="#ffffff",
                                                        alpha=0.55, visible=False)
        # The followed point z_k in every panel (the ledger): all three strips share one source.
        self.marks = marks if marks is not None else ColumnDataSource({"x": [], "y": []})
        draw_ring(self.figure, self.marks, 13)

    def set_projector(self, on: bool) -> None:
        """Larger panels and type for a projector."""
        self.strip_px = PROJECTOR_STRIP_PX if on else STRIP_PX
        self.font = PROJECTOR_FONT if on else FONT
        self.label_glyph.text_font_size = self.font
        self.figure.title.text_font_size = "22px" if on else "15px"
        for bar in self.figure.select(type=ColorBar):
            bar.title_text_font_size = bar.major_label_text_font_size = self.font
        self._key = None  # relayout on the next update

    def locate(self, x: float, y: float) -> tuple[int, tuple[float, float]] | None:
        return self.layout.locate(x, y) if self.layout is not None else None

    def marks_data(self, points: np.ndarray | None) -> dict:
        """Columns that put z_k (points[k]) in panel k, for the shared marks source."""
        if points is None or self.layout is None or len(points) != self.layout.depths:
            return {"x": [], "y": []}
        offsets = np.array([self.layout.offset(k) for k in range(self.layout.depths)])
        placed = self.layout.inside(np.asarray(points, np.float64)) + offsets
        return {"x": placed[:, 0].tolist(), "y": placed[:, 1].tolist()}

    def _relayout(self, view: dict, depths: int, titles: list[str]) -> None:
        layout = Layout(view, depths)
        self.layout = layout
        offsets = [layout.offset(k) for k in range(depths)]
        self.figure.x_range.start, self.figure.x_range.end = layout.x_range()
        self.figure.y_range.start, self.figure.y_range.end = layout.y_range()
        colorbar = 0 if self.kind == "samples" else (130 if self.font == PROJECTOR_FONT else 90)
        width, height = layout.size_px(colorbar, self.strip_px)
        label_px = int(self.font[:-2])
        self.figure.width, self.figure.height = width + colorbar, height + 2 * label_px + 8
        characters = max(6, int(layout.cell_px(colorbar, self.strip_px) / (label_px * 0.62)))
        self.labels.data = {"x": [layout.x0 + dx for dx, _ in offsets],
                            "y": [layout.y0 + layout.h * 1.02 + dy for _, dy in offsets],
                            "text": [depth_label(k, titles, characters) for k in range(depths)]}
        if self.kind == "samples":
            self.frames.data = {"x": [layout.x0 + layout.w / 2 + dx for dx, _ in offsets],
                                "y": [layout.y0 + layout.h / 2 + dy for _, dy in offsets],
                                "w": [layout.w] * depths, "h": [layout.h] * depths}

    def update(self, views: GridViews, view: dict, titles: list[str], cumulative: bool = False) -> dict | None:
        """Redraw from `views`. Image strips return their new columns for the caller to send at once
        (see `update_images`); the sample strip sends its own."""
        depths = views.log_q.shape[0]
        key = (depths, tuple(titles), tuple(view.values()))
        if self.layout is None or getattr(self, "_key", None) != key:
            self._relayout(view, depths, titles)
            self._key = key
        layout = self.layout
        offsets = np.array([layout.offset(k) for k in range(depths)], np.float32)
        if self.kind == "samples":
            self._update_samples(views, offsets)
            return
        if self.kind == "density":
            data = np.exp(views.log_q)
            finite = data[np.isfinite(data)]
            self.mapper.high = _steady_high(self.mapper.high, float(np.quantile(finite, 0.995)) if finite.size else 1.0)
        else:
            data = views.cum_log_det if cumulative else views.log_det
            finite = np.abs(data[1:][np.isfinite(data[1:])])
            top = _steady_high(self.mapper.high, max(float(np.quantile(finite, 0.995)) if finite.size else 0.0, 0.1))
            self.mapper.low, self.mapper.high = -top, top
        return {self.kind: list(data.astype(np.float32)), "x": list(layout.x0 + offsets[:, 0]),
                "y": list(layout.y0 + offsets[:, 1]), "dw": [layout.w] * depths, "dh": [layout.h] * depths}

    def _update_samples(self, views: GridViews, offsets: np.ndarray) -> None:
        layout = self.layout
        depths, n = views.samples.shape[:2]
        points = (layout.inside(views.samples) + offsets[:, None, :]).reshape(-1, 2)
        lines = layout.inside(views.grid_lines) + offsets[:, None, None, :]
        gaps = np.full(lines.shape[:-2] + (1, 2), np.nan, np.float32)
        lines = np.concatenate([lines, gaps], axis=-2).reshape(-1, 2)
        rows = max(len(points), len(lines))
        columns = {"x": _padded(points[:, 0], rows), "y": _padded(points[:, 1], rows),
                   "lx": _padded(lines[:, 0], rows), "ly": _padded(lines[:, 1], rows)}
        if self._colors_for != (depths * n, rows):
            colors = np.zeros(rows, np.uint32)  # transparent padding
            colors[: depths * n] = np.tile(packed_colors(views.samples[0]), depths)
            self.points.data = {**columns, "color": colors}
            self._colors_for = (depths * n, rows)
        else:
            self.points.data.update(columns)

    def show_overlay(self, points: np.ndarray | None) -> None:
        """Target samples over every density panel (or none)."""
        if points is None or self.layout is None:
            self.overlay_renderer.visible = False
            return
        offsets = np.array([self.layout.offset(k) for k in range(self.layout.depths)], np.float32)
        tiled = (self.layout.inside(points[None].repeat(len(offsets), 0)) + offsets[:, None, :]).reshape(-1, 2)
        self.overlay.data = {"x": tiled[:, 0], "y": tiled[:, 1]}
        self.overlay_renderer.visible = True


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
    out = np.full(rows, np.nan, np.float32)
    out[: len(values)] = values
    return out


def update_images(source: ColumnDataSource, columns: list[dict]) -> None:
    """Send both image strips' new columns in one change (the positions are shared)."""
    merged = {key: value for part in columns for key, value in part.items()}
    if len(source.data.get("x", [])) == len(merged["x"]) and list(source.data["x"]) == merged["x"] \
            and list(source.data["y"]) == merged["y"]:
        source.data.update({k: v for k, v in merged.items() if k not in ("x", "y", "dw", "dh")})
    else:
        source.data = merged


def packed_colors(samples0: np.ndarray) -> np.ndarray:
    """start_colors as packed RGBA uint32, which BokehJS uses without parsing a CSS string per point."""
    rgb = (start_colors(samples0) * 255).round().astype(np.uint32)
    return (rgb[:, 0] << 24) | (rgb[:, 1] << 16) | (rgb[:, 2] << 8) | np.uint32(255)


def draw_ring(fig, source: ColumnDataSource, size: int) -> None:
    """A ring that reads on any colour map: black under white."""
    fig.scatter("x", "y", source=source, size=size, fill_color=None, line_color="#000000", line_width=4.5)
    fig.scatter("x", "y", source=source, size=size, fill_color=None, line_color="#ffffff", line_width=2)


def set_square_projector(fig, on: bool, size: int = 250) -> None:
    side = PROJECTOR_SQUARE_PX if on else size
    fig.width, fig.height = side, side + 30
    fig.title.text_font_size = "22px" if on else "15px"


def square_figure(title: str, view: dict, size: int = 250):
    fig = figure(title=title, width=size, height=size + 30, match_aspect=True,
                 x_range=Range1d(view["xmin"], view["xmax"]), y_range=Range1d(view["ymin"], view["ymax"]))
    _style(fig)
    fig.outline_line_color = "#d4d9e2"
    return fig


def fit_view(fig, image_renderers: list, view: dict) -> None:
    """Point a square figure and its images at the view box."""
    fig.x_range.start, fig.x_range.end = view["xmin"], view["xmax"]
    fig.y_range.start, fig.y_range.end = view["ymin"], view["ymax"]
    for renderer in image_renderers:
        renderer.glyph.update(x=view["xmin"], y=view["ymin"], dw=view["xmax"] - view["xmin"], dh=view["ymax"] - view["ymin"])


class TargetAndModel:
    """The target's density beside the model's q_K, on one colour scale."""

    def __init__(self, view: dict):
        self.mapper = LinearColorMapper(palette=DENSITY_PALETTE, low=0.0, high=1.0)
        self.target_fig = square_figure("Target p", view)
        self.model_fig = square_figure("Model q_K", view)
        self.target = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.model = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)]})
        self.points = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
        self.renderers = []
        for fig, source in ((self.target_fig, self.target), (self.model_fig, self.model)):
            self.renderers.append(fig.image("image", x=view["xmin"], y=view["ymin"], dw=view["xmax"] - view["xmin"],
                                            dh=view["ymax"] - view["ymin"], source=source, color_mapper=self.mapper))
        self.overlay = self.model_fig.scatter("x", "y", source=self.points, size=2.5, color="#ffffff", alpha=0.6,
                                              visible=False)
        self.hovers = [HoverTool(renderers=[renderer], tooltips=[("density", "@image{0.000}")])
                       for renderer in self.renderers]
        for fig, hover in zip((self.target_fig, self.model_fig), self.hovers):
            fig.add_tools(hover)
        # Points drawn by hand on the target (before they become the target).
        self.drawn = ColumnDataSource({"x": np.zeros(0), "y": np.zeros(0)})
        self.target_fig.scatter("x", "y", source=self.drawn, size=4, color="#ff7f0e", line_color=None, alpha=0.85)
        # The followed point's path z_0 .. z_K on the model, and where it ends on the target.
        self.path = ColumnDataSource({"x": [], "y": []})
        self.end = ColumnDataSource({"x": [], "y": []})
        self.model_fig.line("x", "y", source=self.path, line_color="#ffffff", line_width=1.5, line_dash="dashed")
        self.model_fig.scatter("x", "y", source=self.path, size=4, color="#ffffff", line_color="#000000")
        for fig in (self.target_fig, self.model_fig):
            draw_ring(fig, self.end, 14)

    def show_path(self, points: np.ndarray | None) -> None:
        if points is None:
            self.path.data = self.end.data = {"x": [], "y": []}
            return
        self.path.data = {"x": points[:, 0].tolist(), "y": points[:, 1].tolist()}
        self.end.data = {"x": [float(points[-1, 0])], "y": [float(points[-1, 1])]}

    def set_projector(self, on: bool) -> None:
        for fig in (self.target_fig, self.model_fig):
            set_square_projector(fig, on)

    def set_view(self, view: dict) -> None:
        for fig, renderer in zip((self.target_fig, self.model_fig), self.renderers):
            fit_view(fig, [renderer], view)

    def set_target(self, density: np.ndarray, points: np.ndarray, view: dict) -> None:
        self.set_view(view)
        self.mapper.high = _nice_ceiling(float(np.quantile(density, 0.998)) if density.size else 1.0)
        self.target.data = {"image": [density.astype(np.float32)]}
        self.points.data = {"x": points[:, 0].astype(np.float32), "y": points[:, 1].astype(np.float32)}

    def update(self, views: GridViews) -> None:
        self.model.data.update(image=[np.exp(views.log_q[-1]).astype(np.float32)])


class DepthAnimation:
    """The flow through depth: samples glide and the density cross-fades from k to k+1 as t runs 0..K."""

    def __init__(self, view: dict):
        self.fig = square_figure("Through the flow: base → output", view)
        self.mapper = LinearColorMapper(palette=DENSITY_PALETTE, low=0.0, high=1.0)
        # Depth k under depth k+1, the upper one faded in by the fractional part of t.
        self.images = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)] * 2, "alpha": [1.0, 0.0]})
        self.image_renderers = [
            self.fig.image("image", x=view["xmin"], y=view["ymin"], dw=view["xmax"] - view["xmin"],
                           dh=view["ymax"] - view["ymin"], source=self.images, color_mapper=self.mapper,
                           global_alpha="alpha")
        ]
        self.points = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32),
                                        "color": np.zeros(0, np.uint32)})
        self.fig.scatter("x", "y", source=self.points, color="color", size=3, line_color=None, alpha=0.9)
        self.caption = ColumnDataSource({"x": [view["xmin"]], "y": [view["ymax"]], "text": [""]})
        self.caption_glyph = self.fig.text("x", "y", "text", source=self.caption, text_font_size=FONT, text_color="#fff",
                                           text_baseline="top", x_offset=6, y_offset=4).glyph
        self.views: GridViews | None = None
        self.titles: list[str] = []
        self._colors_for = -1

    def set_projector(self, on: bool) -> None:
        set_square_projector(self.fig, on)
        self.caption_glyph.text_font_size = PROJECTOR_FONT if on else FONT

    def set_view(self, view: dict) -> None:
        fit_view(self.fig, self.image_renderers, view)
        self.caption.data = {"x": [view["xmin"]], "y": [view["ymax"]], "text": self.caption.data["text"]}

    def show(self, views: GridViews, titles: list[str], t: float) -> None:
        """Draw depth t (0 = base, K = output; fractions blend the two neighbouring depths)."""
        self.views, self.titles = views, titles
        depth = views.log_q.shape[0] - 1
        t = min(max(t, 0.0), float(depth))
        k = min(int(math.floor(t)), max(depth - 1, 0))
        f = t - k if depth else 0.0
        density = np.exp(views.log_q)
        self.mapper.high = _steady_high(self.mapper.high, float(np.quantile(density[np.isfinite(density)], 0.995)))
        upper = min(k + 1, depth)
        self.images.data = {"image": [density[k].astype(np.float32), density[upper].astype(np.float32)],
                            "alpha": [1.0, float(f)]}
        points = ((1 - f) * views.samples[k] + f * views.samples[upper]).astype(np.float32)
        if self._colors_for != points.shape[0]:
            self.points.data = {"x": points[:, 0], "y": points[:, 1], "color": packed_colors(views.samples[0])}
            self._colors_for = points.shape[0]
        else:
            self.points.data.update(x=points[:, 0], y=points[:, 1])
        caption = f"t = {t:.2f} · " + depth_label(int(round(t)), titles, 30).replace("\n", ": ")
        if self.caption.data["text"] != [caption]:
            self.caption.data.update(text=[caption])


class LossChart:
    """Training loss and, every evaluation, the held-out NLL and the true KL (all in nats)."""

    def __init__(self):
        self.fig = figure(title="Loss (nats)", width=380, height=300, x_axis_label="step", y_axis_label="nats",
                          tools="pan,wheel_zoom,reset", toolbar_location="above")
        self.fig.title.text_font_size = "15px"
        self.fig.axis.axis_label_text_font_size = FONT
        self.fig.axis.major_label_text_font_size = FONT
        self.train = ColumnDataSource({"step": np.zeros(0, np.int32), "loss": np.zeros(0, np.float32)})
        self.evals = ColumnDataSource({"step": np.zeros(0, np.int32), "nll": np.zeros(0, np.float32),
                                       "kl": np.zeros(0, np.float32)})
        self.train_line = self.fig.line("step", "loss", source=self.train, color="#9aa6b8", legend_label="training loss")
        self.nll_line = self.fig.line("step", "nll", source=self.evals, color="#2a6fdb", line_width=2,
                                      legend_label="held-out NLL")
        self.kl_line = self.fig.line("step", "kl", source=self.evals, color="#d2691e", line_width=2, legend_label="true KL")
        self.fig.legend.location = "top_right"
        self.fig.legend.label_text_font_size = FONT
        self.fig.add_tools(HoverTool(tooltips=[("step", "@step"), ("value", "$y{0.000} nats")], mode="vline",
                                     renderers=[self.nll_line, self.kl_line]))
        self.sent_train = 0
        self.sent_evals = 0

    def set_projector(self, on: bool) -> None:
        self.fig.width, self.fig.height = (520, 390) if on else (380, 300)
        font = PROJECTOR_FONT if on else FONT
        self.fig.title.text_font_size = "22px" if on else "15px"
        self.fig.axis.axis_label_text_font_size = self.fig.axis.major_label_text_font_size = font
        self.fig.legend.label_text_font_size = font

    def clear(self) -> None:
        self.train.data = {"step": np.zeros(0, np.int32), "loss": np.zeros(0, np.float32)}
        self.evals.data = {"step": np.zeros(0, np.int32), "nll": np.zeros(0, np.float32), "kl": np.zeros(0, np.float32)}
        self.sent_train = self.sent_evals = 0

    def update(self, steps: list[int], losses: list[float], evaluations: list, kl_label: str) -> None:
        if len(steps) < self.sent_train or len(evaluations) < self.sent_evals:
            self.clear()
        n = len(steps)
        if n > self.sent_train:
            # Long runs: thin the line to about 5000 points (every step still counts in the metrics).
            stride = max(1, n // 5000)
            new = slice(self.sent_train, n)
            s = np.asarray(steps[new], np.int32)
            v = np.asarray(losses[new], np.float32)
            keep = (s % stride) == 0
            self.train.stream({"step": s[keep], "loss": v[keep]}, rollover=6000)
            self.sent_train = n
        if len(evaluations) > self.sent_evals:
            new = evaluations[self.sent_evals:]
            self.evals.stream({"step": np.array([e.step for e in new], np.int32),
                               "nll": np.array([e.test_nll for e in new], np.float32),
                               "kl": np.array([np.nan if e.kl is None else e.kl for e in new], np.float32)})
            self.sent_evals = len(evaluations)
        self.kl_line.visible = kl_label != ""
        if self.fig.legend and self.fig.legend[0].items:
            self.fig.legend[0].items[2].label = {"value": kl_label or "true KL"}
