"""The per-depth strips, in Bokeh: one figure per strip that tiles the K+1 depths.

A strip wraps after `MAX_COLUMNS` panels, so a frame is one column update per strip instead of
dozens of figures. `StripLayout` says where panel k sits; `ImageStrip` (density, ln|det J|) and
`SampleStrip` (samples over the warped grid) draw on it. Both image strips read one source, so a
frame's images travel in one message.
"""

from __future__ import annotations

import math

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, Range1d

from flowviz.core.grid import GridViews
from flowviz.core.spec import ViewSpec
from flowviz.ui.layout import Sizes
from flowviz.ui.plots import (
    DENSITY_PALETTE,
    LOG_DET_PALETTE,
    ColorScale,
    depth_label,
    draw_ring,
    finite_quantile,
    packed_colors,
    plane_figure,
    steady_high,
)

MAX_COLUMNS = 9
GAP = 0.08  # gap between panels, as a fraction of the view width
LABEL = 0.3  # room above each panel for its two-line label, as a fraction of the view height (at least)


class StripLayout:
    """Where panel k of a strip sits: columns wrap after MAX_COLUMNS; labels sit above each panel."""

    def __init__(self, view: ViewSpec, depths: int, label: float = LABEL, footer: float = 0.0):
        self.x0, self.y0, self.w, self.h = view.xmin, view.ymin, view.width, view.height
        self.depths = depths
        self.label = label  # room above each panel for its label, as a fraction of the view height
        self.footer = footer  # room below each panel for a line of text (0: none)
        self.columns = min(depths, MAX_COLUMNS)
        self.rows = math.ceil(depths / self.columns)

    def offset(self, k: int) -> tuple[float, float]:
        column, row = k % self.columns, k // self.columns
        return column * self.w * (1 + GAP), -row * self.h * (1 + self.label + self.footer + GAP)

    def offsets(self) -> np.ndarray:
        return np.array([self.offset(k) for k in range(self.depths)], np.float32)

    def x_range(self) -> tuple[float, float]:
        return self.x0 - 0.02 * self.w, self.x0 + self.columns * self.w * (1 + GAP) - GAP * self.w + 0.02 * self.w

    def y_range(self) -> tuple[float, float]:
        bottom = self.y0 - (self.rows - 1) * self.h * (1 + self.label + self.footer + GAP) - self.footer * self.h
        return bottom - 0.02 * self.h, self.y0 + self.h * (1 + self.label)

    def cell_px(self, colorbar_px: int, sizes: Sizes) -> int:
        span = (self.x_range()[1] - self.x_range()[0]) / self.w
        return min(sizes.max_cell_px, int((sizes.strip_px - colorbar_px) / span))

    def size_px(self, colorbar_px: int, sizes: Sizes) -> tuple[int, int]:
        cell = self.cell_px(colorbar_px, sizes)
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


class Strip:
    """What both kinds of strip share: the figure, the panel labels and the followed point's rings."""

    has_colorbar = False
    footer = False  # a line of text under each panel (the density strip's KL after each layer)

    def __init__(self, title: str, marks: ColumnDataSource):
        self.layout: StripLayout | None = None
        self.sizes = Sizes.of(projector=False)
        self._key: tuple | None = None
        self.figure = plane_figure(title=title, match_aspect=True, x_range=Range1d(0, 1), y_range=Range1d(0, 1),
                                   width=900, height=200)  # canvas: WebGL without a GPU costs more CPU than it saves
        self.labels = ColumnDataSource({"x": [], "y": [], "text": []})
        self.label_glyph = self.figure.text("x", "y", "text", source=self.labels, text_font_size="13px",
                                            text_color="#334", text_baseline="bottom").glyph
        self.marks = marks  # z_k of the followed point in panel k; every strip shares one source
        draw_ring(self.figure, self.marks, 13)

    def fits(self, title: str) -> bool:
        """Whether `title` fits the figure's width (Bokeh clips a title, it does not wrap it)."""
        return 0.58 * self.sizes.title_font * len(title) <= self.figure.width

    def set_sizes(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.label_glyph.text_font_size = sizes.font_css
        self.figure.title.text_font_size = sizes.title_css
        for bar in self.figure.select(type=ColorBar):
            bar.title_text_font_size = bar.major_label_text_font_size = sizes.font_css
        self._key = None  # relayout on the next update

    def locate(self, x: float, y: float) -> tuple[int, tuple[float, float]] | None:
        return self.layout.locate(x, y) if self.layout is not None else None

    def marks_data(self, points: np.ndarray | None) -> dict:
        """Columns that put z_k (points[k]) in panel k, for the shared marks source."""
        if points is None or self.layout is None or len(points) != self.layout.depths:
            return {"x": [], "y": []}
        placed = self.layout.inside(np.asarray(points, np.float64)) + self.layout.offsets()
        return {"x": placed[:, 0].tolist(), "y": placed[:, 1].tolist()}

    def arrange(self, view: ViewSpec, depths: int, titles: list[str]) -> StripLayout:
        """The layout for this frame; the figure is laid out anew only when depths, titles or view change."""
        key = (depths, tuple(titles), view, self.sizes, self.footer)
        if key != self._key:
            self._key = key
            colorbar = self.sizes.colorbar_px if self.has_colorbar else 0
            cell = max(StripLayout(view, depths).cell_px(colorbar, self.sizes), 1)  # (the label room does not change it)
            # Two lines of label text in pixels, however small the panels (a narrow screen); one under it.
            footer = (2.6 * self.sizes.font + 4) / cell if self.footer else 0.0
            self.layout = StripLayout(view, depths, max(LABEL, (2.4 * self.sizes.font + 4) / cell), footer)
            self._relayout(self.layout, titles)
        return self.layout

    def _relayout(self, layout: StripLayout, titles: list[str]) -> None:
        offsets = layout.offsets()
        self.figure.x_range.start, self.figure.x_range.end = layout.x_range()
        self.figure.y_range.start, self.figure.y_range.end = layout.y_range()
        colorbar = self.sizes.colorbar_px if self.has_colorbar else 0
        width, height = layout.size_px(colorbar, self.sizes)
        self.figure.width, self.figure.height = width + colorbar, height + 2 * self.sizes.font + 8
        characters = max(6, int(layout.cell_px(colorbar, self.sizes) / (self.sizes.font * 0.62)))
        self.labels.data = {"x": (layout.x0 + offsets[:, 0]).tolist(),
                            "y": (layout.y0 + layout.h * 1.02 + offsets[:, 1]).tolist(),
                            "text": [depth_label(k, titles, characters) for k in range(layout.depths)]}


def image_source() -> ColumnDataSource:
    """The one source both image strips read, each its own column."""
    return ColumnDataSource({"density": [], "log_det": [], "x": [], "y": [], "dw": [], "dh": []})


class ImageStrip(Strip):
    """q_k (density) or ln|det J_k| (log_det) of every depth, as images with one colour bar."""

    has_colorbar = True

    def __init__(self, column: str, title: str, images: ColumnDataSource, marks: ColumnDataSource):
        super().__init__(title, marks)
        self.column = column  # "density" or "log_det"
        density = column == "density"
        self.scale = ColorScale(DENSITY_PALETTE if density else LOG_DET_PALETTE, 0.0 if density else -1.0, 1.0)
        self.mapper = self.scale.mapper
        self.images = images
        self.renderer = self.figure.image(column, x="x", y="y", dw="dw", dh="dh", source=images,
                                          color_mapper=self.scale.painter())
        self.figure.add_layout(ColorBar(color_mapper=self.mapper, width=12, title="per unit area" if density else "nats",
                                        title_text_font_size="13px", major_label_text_font_size="13px"), "right")
        self.figure.add_tools(self.scale.hover(self.renderer, "q_k" if density else "ln|det J|", "" if density else " nats",
                                               field=column))
        self.overlay = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
        self.overlay_renderer = self.figure.scatter("x", "y", source=self.overlay, size=2, color="#ffffff",
                                                    alpha=0.55, visible=False)
        # Under each panel: the KL after k layers, and below it what layer k changed it by, green where
        # it fell and red where it rose. Two glyphs of fixed colour, not one with a colour column: a
        # colour column that went from strings to empty made the page throw (Bokeh 3.9, "Offset is
        # outside the bounds of the DataView") once a target without a density was chosen.
        self.fit = ColumnDataSource({name: [] for name in FIT_COLUMNS})
        self.fit_glyphs = [self.figure.text("x", "y", "text", source=self.fit, text_font_size="13px",
                                            text_color="#1d2a44", text_baseline="top").glyph]
        self.fit_glyphs += [self.figure.text("x", "change_y", column, source=self.fit, text_font_size="13px",
                                             text_color=color, text_baseline="top").glyph
                            for column, color in (("fell", FELL), ("rose", ROSE), ("same", SAME))]

    def set_sizes(self, sizes: Sizes) -> None:
        super().set_sizes(sizes)
        for glyph in self.fit_glyphs:
            glyph.text_font_size = sizes.font_css

    def show_fit(self, kl: list[float] | None, exact: bool) -> None:
        """Under each panel the KL of q_k against the target and what layer k changed it by (call after
        `columns`, which lays the room out): which layers earn their keep."""
        layout = self.layout
        if kl is None or layout is None or len(kl) != layout.depths:
            data = {name: [] for name in FIT_COLUMNS}
        else:
            offsets = layout.offsets()
            top = layout.y0 - 0.03 * layout.h + offsets[:, 1]
            line = 1.25 * self.sizes.font / max(layout.cell_px(self.sizes.colorbar_px, self.sizes), 1) * layout.h
            labels = [fit_label(kl, k, exact) for k in range(len(kl))]
            data = {"x": (layout.x0 + offsets[:, 0]).tolist(), "y": top.tolist(), "text": [t for t, _, _ in labels],
                    "change_y": (top - line).tolist(), "fell": [c if color == FELL else "" for _, c, color in labels],
                    "rose": [c if color == ROSE else "" for _, c, color in labels],
                    "same": [c if color == SAME else "" for _, c, color in labels]}
        if data != self.fit.data:
            self.fit.data = data

    def columns(self, views: GridViews, view: ViewSpec, titles: list[str], cumulative: bool = False,
                quantised: bool = False, footer: bool = False) -> dict:
        """This strip's new columns, for `send_images` to send with the other strip's at once;
        `quantised`: the images as colour indices (a byte per pixel); `footer`: room for a line under
        each panel (`show_fit`)."""
        self.footer = footer
        depths = views.log_q.shape[0]
        layout = self.arrange(view, depths, titles)
        if self.column == "density":
            data = np.exp(views.log_q)
            self.mapper.high = steady_high(self.mapper.high, finite_quantile(data, 0.995))
        else:
            data = views.cum_log_det if cumulative else views.log_det
            top = steady_high(self.mapper.high, max(finite_quantile(np.abs(data[1:]), 0.995, empty=0.0), 0.1))
            self.mapper.low, self.mapper.high = -top, top
        offsets = layout.offsets()
        self.scale.draw_with(self.renderer, quantised)
        return {self.column: list(self.scale.encode(data, quantised)), "x": list(layout.x0 + offsets[:, 0]),
                "y": list(layout.y0 + offsets[:, 1]), "dw": [layout.w] * depths, "dh": [layout.h] * depths}

    def show_overlay(self, points: np.ndarray | None) -> None:
        """Target samples over every panel (or none)."""
        if points is None or self.layout is None:
            self.overlay_renderer.visible = False
            return
        offsets = self.layout.offsets()
        tiled = (self.layout.inside(points[None].repeat(len(offsets), 0)) + offsets[:, None, :]).reshape(-1, 2)
        self.overlay.data = {"x": tiled[:, 0], "y": tiled[:, 1]}
        self.overlay_renderer.visible = True


FELL, ROSE, SAME = "#1a7f37", "#b42318", "#667085"  # what a layer did to the KL: lowered, raised, kept it
FIT_COLUMNS = ("x", "y", "text", "change_y", "fell", "rose", "same")


def fit_label(kl: list[float], k: int, exact: bool) -> tuple[str, str, str]:
    """("KL 0.250", "−1.250", colour): the KL at depth k, the change layer k made and the colour that
    says which way (grey where it is zero at the precision shown: a layer that is still the
    identity); rounded to the live estimate's precision when not `exact`.

    Example:
        >>> fit_label([1.5, 0.25, float("inf")], 1, True)
        ('KL 0.250', '−1.250', '#1a7f37')
        >>> fit_label([1.5, 0.25, float("inf")], 2, False)
        ('KL ∞', '', '#1d2a44')
        >>> fit_label([1.5, 1.75], 1, False), fit_label([1.5, 1.5002], 1, True)
        (('KL ≈ 1.75', '+0.25', '#b42318'), ('KL 1.500', '±0.000', '#667085'))
    """
    digits = 3 if exact else 2
    value = kl[k]
    if not math.isfinite(value):
        return ("KL ∞" if value > 0 else "KL —"), "", "#1d2a44"
    text = f"KL {'' if exact else '≈ '}{value:.{digits}f}".replace("-", "−")
    change = value - kl[k - 1] if k else math.nan
    if not math.isfinite(change):
        return text, "", "#1d2a44"
    if round(change, digits) == 0:
        return text, f"±{0:.{digits}f}", SAME
    return text, f"{change:+.{digits}f}".replace("-", "−"), FELL if change < 0 else ROSE


def fits_source(source: ColumnDataSource, columns: dict) -> bool:
    """Whether a strip's new `columns` put their panels where the shared source has them now."""
    return list(source.data.get("x", [])) == columns["x"] and list(source.data.get("y", [])) == columns["y"]


def send_images(source: ColumnDataSource, columns: list[dict]) -> None:
    """Send the image strips' new columns in one change (the positions are shared): one strip's
    alone where they fit the source, else both, which then replace it."""
    merged = {key: value for part in columns for key, value in part.items()}
    if fits_source(source, merged):
        source.data.update({k: v for k, v in merged.items() if k not in ("x", "y", "dw", "dh")})
    else:
        source.data = merged


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
    out = np.full(rows, np.nan, np.float32)
    out[: len(values)] = values
    return out


ARROW_COLUMNS = ("ax", "ay", "bx", "by", "angle")
ARROW_COLOR = "#1f3b73"
ARROW_LENGTH = 0.09  # the fastest arrow of a frame, as a fraction of the view's width (the grid's spacing)


def arrow_columns(views: GridViews, layout: StripLayout) -> dict[str, np.ndarray]:
    """Segments from each coarse-grid point along v(x, t1), in the panels of continuous layers. One
    length scale for the whole frame, so speeds compare across panels; the head points along v."""
    if not views.arrows:
        return {name: np.zeros(0, np.float32) for name in ARROW_COLUMNS}
    speeds = np.concatenate([np.hypot(a[:, 2], a[:, 3]) for a in views.arrows.values()])
    scale = ARROW_LENGTH * layout.w / max(float(np.nanmax(speeds)) if speeds.size else 0.0, 1e-9)
    parts = []
    for k, arrows in views.arrows.items():
        dx, dy = layout.offset(k)
        start = arrows[:, :2] + (dx, dy)
        end = start + scale * arrows[:, 2:]
        parts.append(np.column_stack([start, end, np.arctan2(arrows[:, 3], arrows[:, 2]) - np.pi / 2]))
    table = np.concatenate(parts).astype(np.float32)
    return dict(zip(ARROW_COLUMNS, table.T))


class SampleStrip(Strip):
    """The samples z_k of every depth, coloured by where they start, over the warped base grid."""

    def __init__(self, title: str, marks: ColumnDataSource):
        super().__init__(title, marks)
        # Samples and grid lines share one source (one message per frame): both are padded with
        # NaN to a common length, which neither glyph draws.
        empty = np.zeros(0, np.float32)
        self.points = ColumnDataSource({"x": empty, "y": empty, "color": np.zeros(0, np.uint32), "lx": empty, "ly": empty})
        self.figure.line("lx", "ly", source=self.points, line_color="#b9c0cc", line_width=0.8)
        self.figure.scatter("x", "y", source=self.points, color="color", size=3, line_color=None)
        # A continuous flow's velocity field: a segment and a triangle head per arrow. A source of its
        # own: padded into the points' source it cost 54 KiB a frame of NaN for a flow without one.
        self.arrows = ColumnDataSource({name: empty for name in ARROW_COLUMNS})
        self.figure.segment("ax", "ay", "bx", "by", source=self.arrows, line_color=ARROW_COLOR, line_width=1.2,
                            line_alpha=0.6)
        self.figure.scatter("bx", "by", source=self.arrows, marker="triangle", angle="angle", size=5,
                            color=ARROW_COLOR, line_color=None, alpha=0.6)
        self.frames = ColumnDataSource({"x": [], "y": [], "w": [], "h": []})
        self.figure.rect("x", "y", "w", "h", source=self.frames, fill_color=None, line_color="#d4d9e2")
        self._colors_for: tuple | None = None

    def _relayout(self, layout: StripLayout, titles: list[str]) -> None:
        super()._relayout(layout, titles)
        offsets = layout.offsets()
        self.frames.data = {"x": (layout.x0 + layout.w / 2 + offsets[:, 0]).tolist(),
                            "y": (layout.y0 + layout.h / 2 + offsets[:, 1]).tolist(),
                            "w": [layout.w] * layout.depths, "h": [layout.h] * layout.depths}

    def update(self, views: GridViews, view: ViewSpec, titles: list[str]) -> None:
        depths, n = views.samples.shape[:2]
        layout = self.arrange(view, depths, titles)
        offsets = layout.offsets()
        points = (layout.inside(views.samples) + offsets[:, None, :]).reshape(-1, 2)
        lines = layout.inside(views.grid_lines) + offsets[:, None, None, :]
        gaps = np.full(lines.shape[:-2] + (1, 2), np.nan, np.float32)
        lines = np.concatenate([lines, gaps], axis=-2).reshape(-1, 2)
        arrows = arrow_columns(views, layout)
        if len(arrows["ax"]) or len(self.arrows.data["ax"]):
            self.arrows.data = arrows
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
