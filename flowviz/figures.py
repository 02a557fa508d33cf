"""Figures for the CLI, reports and downloads, drawn with matplotlib, numpy and PIL (no Panel, no Bokeh).
matplotlib is imported only by the functions that draw with it: the app starts without it.

- `render_views` / `render_flow` / `views_png`: the per-layer views. Columns are depths k = 0..K (at
  most `max_columns`, evenly spaced, always with the base and the output) plus the target; rows are
  the density q_k, layer k's ln|det J_k|, and the samples z_k over the warped base grid, coloured by
  where each sample started.
- `depth_gif`: an animated GIF of the flow through depth (samples glide from z_k to z_{k+1} while
  the density cross-fades from q_k to q_{k+1}).
- `TrainingRecorder` / `training_gif`: an animated GIF of q_K and its samples over training.
- `samples_csv`: samples of q_K as CSV.

The functions that end in a file return bytes, so the CLI writes them and the app offers them as
downloads.
"""

from __future__ import annotations

import functools
import io
import textwrap
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from flowviz.core.build import shown_flow
from flowviz.core.flow import Flow
from flowviz.core.grid import GridRequest, GridViews, evaluate_grid, target_image
from flowviz.core.spec import ExperimentSpec, ViewSpec
from flowviz.core.targets import Target


def start_colors(samples0: np.ndarray) -> np.ndarray:
    """A colour per sample from its angle and radius in the base, so it can be followed."""
    angle = (np.arctan2(samples0[:, 1], samples0[:, 0]) + np.pi) / (2 * np.pi)
    radius = np.clip(np.linalg.norm(samples0, axis=1) / 3, 0, 1)
    return _hsv_to_rgb(angle, 0.35 + 0.65 * radius, np.full_like(angle, 0.85))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] from hue, saturation and value in [0, 1] (matplotlib's hsv_to_rgb)."""
    sector = np.floor(h * 6.0) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,), np.float64)
    for i, channels in enumerate(choices):
        rgb[sector == i] = np.stack(channels, -1)[sector == i]
    return rgb


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def depth_columns(depth: int, max_columns: int) -> list[int]:
    if depth + 1 <= max_columns:
        return list(range(depth + 1))
    return sorted(set(np.linspace(0, depth, max_columns).round().astype(int).tolist()))


def render_views(views: GridViews, layer_titles: list[str], target_density: np.ndarray | None, path: str | Path,
                 max_columns: int = 9) -> None:
    depths = depth_columns(len(views.layers), max_columns)
    columns = len(depths) + 1
    plt = _pyplot()
    fig, axes = plt.subplots(3, columns, figsize=(2.3 * columns, 7.2), squeeze=False, constrained_layout=True)
    extent = (views.x[0], views.x[-1], views.y[0], views.y[-1])
    density = np.exp(views.log_q)
    vmax = float(np.nanmax(density)) if np.isfinite(density).any() else 1.0
    # At least ±0.1 nats, so float noise around 0 (an untrained layer) stays white, not striped.
    ldmax = max(float(np.nanmax(np.abs(views.log_det[1:]))) if len(views.layers) else 0.0, 0.1)
    colors = start_colors(views.samples[0]) if views.samples.shape[1] else None
    for c, k in enumerate(depths):
        title = "k = 0\nbase" if k == 0 else f"k = {k}\n" + textwrap.shorten(layer_titles[k - 1], 26, placeholder="…")
        axes[0, c].set_title(title, fontsize=8)
        axes[0, c].imshow(density[k], origin="lower", extent=extent, cmap="viridis", vmin=0, vmax=vmax)
        im = axes[1, c].imshow(views.log_det[k], origin="lower", extent=extent, cmap="RdBu_r", vmin=-ldmax, vmax=ldmax)
        for line in views.grid_lines[k]:
            axes[2, c].plot(line[:, 0], line[:, 1], color="0.8", lw=0.5)
        if colors is not None:
            axes[2, c].scatter(views.samples[k, :, 0], views.samples[k, :, 1], s=1.5, c=colors, linewidths=0)
        axes[2, c].set_xlim(extent[:2])
        axes[2, c].set_ylim(extent[2:])
    axes[0, -1].set_title("target\n", fontsize=8)
    if target_density is not None:
        axes[0, -1].imshow(target_density, origin="lower", extent=extent, cmap="viridis")
    axes[1, -1].axis("off")
    axes[2, -1].axis("off")
    fig.colorbar(im, ax=axes[1, -1], fraction=0.5, label="ln|det J_k| (nats)")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    axes[0, 0].set_ylabel("density q_k")
    axes[1, 0].set_ylabel("ln|det J_k|")
    axes[2, 0].set_ylabel("samples z_k")
    # A path picks its format from its suffix; a file object (BytesIO) gets PNG.
    fig.savefig(path, dpi=110, format=None if isinstance(path, (str, Path)) else "png")
    plt.close(fig)


def views_png(flow: Flow, target: Target, spec: ExperimentSpec, resolution: int | None = None,
              samples: int = 2000) -> bytes:
    """The per-layer views figure (as `render_flow` draws it) as PNG bytes, for downloads."""
    view = spec.view if resolution is None else replace(spec.view, resolution=resolution)
    request = GridRequest.from_view(view)
    flow = shown_flow(flow, spec)
    views = evaluate_grid(flow, request, _base_samples(flow, samples, spec.seed))
    titles = [layer.info.title for _, layer in flow.active()]
    buffer = io.BytesIO()
    render_views(views, titles, target_image(target, request, seed=spec.seed), buffer)
    return buffer.getvalue()


def render_flow(flow: Flow, target: Target, spec: ExperimentSpec, path, resolution: int | None = None,
                samples: int = 2000) -> None:
    """Evaluate `flow` on the spec's view (optionally at another resolution) and draw its views,
    with `samples` base samples seeded from the spec, beside the target, into a PNG at `path`."""
    Path(path).write_bytes(views_png(flow, target, spec, resolution, samples))


def _base_samples(flow: Flow, n: int, seed: int) -> torch.Tensor:
    return flow.base.sample(n, torch.Generator().manual_seed(seed)).detach()


# -- Animated GIFs and other downloads ---------------------------------------------------------------
# Frames are drawn straight into numpy arrays (density through a viridis lookup table, samples as
# small dots) with captions from PIL, then quantised to one palette shared by every frame: about
# 10 ms a frame, and no colour flicker between frames.

_INK, _GREY, _ACCENT, _TRACK = (34, 34, 34), (110, 110, 110), (42, 111, 219), (205, 205, 205)
_MARGIN, _HEADER = 10, 50
_DENSITY_LEVELS = 48  # colours of the density scale: fine enough to look smooth, coarse enough to compress
# A dot: a 2x2 core in the sample's colour inside a darker ring 4 pixels across (corners cut), so
# it stands out on any part of the colour map. (row, column) offsets from the sample's pixel.
_DOT_CORE = [(0, 0), (0, 1), (1, 0), (1, 1)]
_DOT_RING = [(dy, dx) for dy in (-1, 0, 1, 2) for dx in (-1, 0, 1, 2)
             if (dy, dx) not in _DOT_CORE and not (dy in (-1, 2) and dx in (-1, 2))]


@functools.cache
def _viridis() -> np.ndarray:
    """(256, 3) float32 RGB of matplotlib's viridis (read-only after the first call)."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def _font(size: int, bold: bool = False):
    from matplotlib import font_manager

    try:
        properties = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
        path = font_manager.findfont(properties)
        return ImageFont.truetype(path, size)
    except OSError:  # no FreeType: PIL's own bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _density_rgb(density: np.ndarray, vmax: float, size: int) -> np.ndarray:
    """(R, R) density, rows following y, as a (size, size, 3) float RGB image, top row = ymax."""
    grid = np.nan_to_num(np.asarray(density, np.float32), nan=0.0, posinf=np.float32(3e38), neginf=0.0)
    grid = np.ascontiguousarray(np.clip(grid / vmax, 0.0, 1.0)[::-1])
    smooth = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR))
    levels = np.clip(np.rint(smooth * (_DENSITY_LEVELS - 1)), 0, _DENSITY_LEVELS - 1)
    return _viridis()[np.rint(levels * (255 / (_DENSITY_LEVELS - 1))).astype(np.intp)]


def _draw_dots(canvas: np.ndarray, points: np.ndarray, colors: np.ndarray, view: ViewSpec) -> None:
    """Dots at `points` (data coordinates in `view`) on a (S, S, 3) canvas, in place."""
    size = canvas.shape[0]
    finite = np.isfinite(points).all(1)
    points, colors = points[finite], colors[finite]
    cols = np.floor((points[:, 0] - view.xmin) / (view.xmax - view.xmin) * size).astype(np.int64)
    rows = np.floor((view.ymax - points[:, 1]) / (view.ymax - view.ymin) * size).astype(np.int64)
    near = (cols > -3) & (cols < size + 2) & (rows > -3) & (rows < size + 2)
    cols, rows, colors = cols[near], rows[near], colors[near]
    rings = (colors * 0.4).astype(np.uint8)
    for offsets, fill in ((_DOT_RING, rings), (_DOT_CORE, colors)):
        for dy, dx in offsets:
            r, c = rows + dy, cols + dx
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            canvas[r[inside], c[inside]] = fill[inside]


def _sample_colors(samples0: np.ndarray) -> np.ndarray:
    return np.rint(start_colors(samples0) * 255).astype(np.uint8) if len(samples0) else np.zeros((0, 3), np.uint8)


def _robust_max(densities: list[np.ndarray]) -> float:
    """The top of a density colour scale: the 99.5th percentile of the finite values (the peaks of
    a few pixels would otherwise wash the rest out)."""
    tops = [float(np.quantile(d[np.isfinite(d)], 0.995)) for d in densities if np.isfinite(d).any()]
    top = max(tops, default=0.0)
    return top if np.isfinite(top) and top > 0 else 1.0


def _frame(size: int, footer: int) -> tuple[Image.Image, tuple[int, int]]:
    """A blank white frame with room for the caption, a size² plot and a footer; and the plot's
    top-left corner."""
    width, height = size + 2 * _MARGIN, _HEADER + size + footer
    frame = Image.new("RGB", (width, height), (255, 255, 255))
    return frame, (_MARGIN, _HEADER)


def _caption(draw, lead: str, rest: str, title: str, what: str, width: int, fonts) -> None:
    """`lead` in bold and `rest` on the first line; below, "title · what", or the title alone
    where both do not fit."""
    bold, regular, small = fonts
    draw.text((_MARGIN, 8), lead, font=bold, fill=_INK)
    x = _MARGIN + draw.textlength(lead, font=bold) + 10
    draw.text((x, 9), _fit(draw, rest, regular, width - x - _MARGIN), font=regular, fill=_INK)
    room = width - 2 * _MARGIN
    subtitle = f"{title} · {what}" if title else what
    if title and draw.textlength(subtitle, font=small) > room:
        subtitle = title
    draw.text((_MARGIN, 30), _fit(draw, subtitle, small, room), font=small, fill=_GREY)


def _encode_gif(frames: list, durations: list[int]) -> bytes:
    """An endlessly looping GIF of RGB PIL images, quantised to one 256-colour palette taken from
    up to 12 frames spread over the animation (no dithering: dithered noise compresses badly)."""
    chosen = frames[:: max(1, len(frames) // 12)][:12]
    mosaic = Image.fromarray(np.concatenate([np.asarray(f) for f in chosen], axis=0))
    palette = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexed = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buffer = io.BytesIO()
    indexed[0].save(buffer, format="GIF", save_all=True, append_images=indexed[1:], duration=list(durations),
                    loop=0, disposal=1)
    return buffer.getvalue()


def depth_frame_count(layers: int, frames_per_layer: int | None = None) -> int:
    """How many frames `depth_gif` draws for a flow of `layers` active layers."""
    return layers * _frames_per_layer(layers, frames_per_layer) + 1


def _frames_per_layer(layers: int, frames_per_layer: int | None) -> int:
    if frames_per_layer is not None:
        return max(1, int(frames_per_layer))
    return max(4, min(10, 80 // max(layers, 1)))  # about 80 frames in all, 4 to 10 per layer


def depth_gif(flow: Flow, spec: ExperimentSpec, frames_per_layer: int | None = None, size_px: int = 360,
              samples: int = 600, resolution: int | None = None, step_ms: int = 70, hold_ms: int = 450) -> bytes:
    """An endlessly looping GIF of the flow through depth: the samples z_k glide from layer to layer
    (z = (1 - s) z_k + s z_{k+1}, as in the explorer, with s eased in and out) over the density,
    which cross-fades from q_k to q_{k+1} on one colour scale for every depth. A caption names the
    depth and the layer; a bar at the bottom marks the depth. Each depth k holds for `hold_ms`.

    `frames_per_layer` defaults to 4–10 (about 80 frames in all; `depth_frame_count` says how many),
    `samples` base samples are seeded from the spec, the grid is the spec's view at its resolution
    (or `resolution`), evaluated once. About 1.3 MB for the 8 layers of presets/realnvp-moons.json."""
    view = spec.view if resolution is None else replace(spec.view, resolution=resolution)
    flow = shown_flow(flow, spec)
    views = evaluate_grid(flow, GridRequest.from_view(view), _base_samples(flow, samples, spec.seed))
    depth = len(views.layers)
    per_layer = _frames_per_layer(depth, frames_per_layer)
    titles = ["base: " + flow.base.info.title] + [layer.info.title for _, layer in flow.active()]
    density = np.exp(views.log_q.astype(np.float64))
    vmax = _robust_max(list(density))
    images = [_density_rgb(d, vmax, size_px) for d in density]
    colors = _sample_colors(views.samples[0])
    fonts = (_font(15, bold=True), _font(14), _font(12))

    steps = [(k, j / per_layer) for k in range(depth) for j in range(per_layer)] + [(depth, 0.0)]
    frames, durations = [], []
    for k, s in steps:
        eased = s * s * (3 - 2 * s)
        upper = min(k + 1, depth)
        canvas = images[k] if s == 0 else (1 - eased) * images[k] + eased * images[upper]
        canvas = np.rint(canvas).astype(np.uint8)
        _draw_dots(canvas, views.samples_between(k, eased), colors, view)
        frame, origin = _frame(size_px, footer=28)
        frame.paste(Image.fromarray(canvas), origin)
        draw = ImageDraw.Draw(frame)
        draw.rectangle([origin[0] - 1, origin[1] - 1, origin[0] + size_px, origin[1] + size_px], outline=_TRACK)
        if s == 0:
            lead, rest = f"k = {k} / {depth}", titles[k]
        else:
            lead, rest = f"k = {k} → {k + 1} / {depth}", titles[k + 1]
            clock = views.time_between(k, eased)
            if clock is not None:  # through a continuous flow: its own clock
                rest = f"continuous flow at ODE time t = {clock:.2f}"
        _caption(draw, lead, rest, spec.title, "density q_k and samples z_k", frame.width, fonts)
        _depth_bar(draw, (k + eased) / depth if depth else 1.0, depth, origin[1] + size_px + 14, size_px)
        frames.append(frame)
        durations.append(step_ms if s else (2 * hold_ms if k in (0, depth) else hold_ms))
    return _encode_gif(frames, durations)


def _depth_bar(draw, fraction: float, depth: int, y: int, size: int) -> None:
    """A track from the base to the output with a tick per depth, filled up to `fraction`."""
    x0, x1 = _MARGIN + 6, _MARGIN + size - 6
    draw.line([(x0, y), (x1, y)], fill=_TRACK, width=3)
    for k in range(depth + 1):
        x = x0 + (x1 - x0) * k / max(depth, 1)
        draw.line([(x, y - 5), (x, y + 5)], fill=_TRACK, width=1)
    x = x0 + (x1 - x0) * fraction
    draw.line([(x0, y), (x, y)], fill=_ACCENT, width=3)
    draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=_ACCENT)


# -- The training GIF ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingFrame:
    """The model at one training step: what one frame of the training GIF draws."""

    step: int
    loss: float  # NaN where unknown (the untrained model at step 0)
    log_q: np.ndarray  # (R, R) ln q_K on the view grid, rows follow y
    samples: np.ndarray  # (N, 2) samples of q_K (may be empty)
    colors: np.ndarray | None = None  # (N, 3) uint8 per sample; None draws them white


class TrainingRecorder:
    """Collects snapshots of the model during training and turns them into a GIF.

    Feed it either from a model (`record(flow, step, loss)`: evaluates ln q_K on the recorder's grid
    and pushes the same seeded base samples through the flow, so every sample keeps its colour) or
    from views already computed (`add(step, loss, grid_views)`, or `add(step, loss, log_q_K, samples_K)`).
    Memory stays bounded: past `max_frames` snapshots it keeps every other one, so the frames stay
    evenly spaced in arrival order, and it always keeps the latest. Thread-safe.

        recorder = TrainingRecorder(spec.view, title=spec.title, total_steps=1500)

        def every_25(step, loss, evaluation):
            if step % 25 == 0:
                recorder.record(trainer.flow, step, loss)

        trainer.run(1500, every_25)
        Path("training.gif").write_bytes(recorder.gif())
    """

    def __init__(self, view: ViewSpec, *, title: str = "", total_steps: int | None = None, max_frames: int = 120,
                 resolution: int | None = None, samples: int = 600, seed: int = 0):
        if max_frames < 2:
            raise ValueError("max_frames must be at least 2")
        self.view = view
        self.title = title
        self.total_steps = total_steps
        self.max_frames = max_frames
        self.resolution = int(resolution if resolution is not None else view.resolution)
        self.samples = samples
        self.seed = seed
        self._kept: list[TrainingFrame] = []
        self._latest: TrainingFrame | None = None  # the newest snapshot, when thinning skipped it
        self._arrived = 0
        self._stride = 1
        self._lock = threading.Lock()
        self._colored: tuple[np.ndarray, np.ndarray] | None = None  # the last base points and their colours

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frames(self) -> list[TrainingFrame]:
        """The kept frames, oldest first, the newest snapshot always last."""
        with self._lock:
            return self._kept + ([self._latest] if self._latest is not None else [])

    def add(self, step: int, loss: float, views: GridViews | np.ndarray, samples: np.ndarray | None = None,
            base_samples: np.ndarray | None = None) -> None:
        """A snapshot: a `GridViews` (its last depth is used), or ln q_K on the view grid (R, R) with
        optional samples of q_K (N, 2) and the base points they came from (for their colours)."""
        if isinstance(views, GridViews):
            log_q, samples, base_samples = views.log_q[-1], views.samples[-1], views.samples[0]
        else:
            log_q = views
        log_q = np.array(log_q, np.float32)  # a copy: the caller's arrays may be reused
        if log_q.ndim != 2:
            raise ValueError(f"log_q must be a 2-D grid, not shape {log_q.shape}")
        samples = np.zeros((0, 2), np.float32) if samples is None else np.array(samples, np.float32).reshape(-1, 2)
        colors = None
        if base_samples is not None and len(base_samples) == len(samples):
            base = np.asarray(base_samples, np.float32).reshape(-1, 2)
            # Live frames push the same seeded base points every time: their colours are computed once
            # (they cost ~1 ms of the server's event loop per frame otherwise).
            if self._colored is None or not np.array_equal(self._colored[0], base):
                self._colored = (base.copy(), _sample_colors(base))
            colors = self._colored[1]
        frame = TrainingFrame(int(step), float(loss), log_q, samples, colors)
        with self._lock:
            index = self._arrived
            self._arrived += 1
            if index % self._stride:
                self._latest = frame
                return
            self._kept.append(frame)
            self._latest = None
            if len(self._kept) >= self.max_frames:  # keep every other one; room stays for the latest
                self._kept = self._kept[::2]
                self._stride *= 2
                if self._kept[-1] is not frame:
                    self._latest = frame

    @torch.no_grad()
    def record(self, flow: Flow, step: int, loss: float = float("nan")) -> None:
        """Snapshot `flow` (in eval mode; its mode is kept): ln q_K on the grid and its samples."""
        with flow.evaluating():
            request = GridRequest.from_view(replace(self.view, resolution=self.resolution))
            log_q = flow.log_prob(request.points().to(flow.device)).view(self.resolution, self.resolution)
            base = _base_samples(flow, self.samples, self.seed)
            points, _ = flow(base)
        self.add(step, loss, log_q.float().cpu().numpy(), points.float().cpu().numpy(), base.float().cpu().numpy())

    def gif(self, **options) -> bytes:
        """The recorded frames as a GIF; `options` go to `training_gif`."""
        options.setdefault("title", self.title)
        options.setdefault("total_steps", self.total_steps)
        return training_gif(self.frames, self.view, **options)


def training_gif(frames: list[TrainingFrame], view: ViewSpec, *, title: str = "", total_steps: int | None = None,
                 size_px: int = 360, frame_ms: int = 90, final_ms: int = 2000, vmax: float | None = None) -> bytes:
    """An endlessly looping GIF of training: per frame, the model density q_K with its samples, the
    step and the loss in the caption, and the loss curve so far below. Every frame uses one colour
    scale (`vmax`, by default the largest 99.5th percentile of q_K over the frames), so brightness
    compares across steps. The last frame holds for `final_ms`."""
    if not frames:
        raise ValueError("no frames to draw")
    densities = [np.exp(f.log_q.astype(np.float64)) for f in frames]
    top = vmax if vmax is not None else _robust_max(densities)
    total = total_steps if total_steps is not None else frames[-1].step
    fonts = (_font(15, bold=True), _font(14), _font(12))
    losses = np.array([f.loss for f in frames], np.float64)
    steps = np.array([f.step for f in frames], np.float64)
    chart_height = 58
    images, durations = [], []
    for i, (frame_data, density) in enumerate(zip(frames, densities)):
        canvas = np.rint(_density_rgb(density, top, size_px)).astype(np.uint8)
        colors = frame_data.colors
        if colors is None:
            colors = np.full((len(frame_data.samples), 3), 240, np.uint8)
        _draw_dots(canvas, frame_data.samples, colors, view)
        frame, origin = _frame(size_px, footer=chart_height + 14)
        frame.paste(Image.fromarray(canvas), origin)
        draw = ImageDraw.Draw(frame)
        draw.rectangle([origin[0] - 1, origin[1] - 1, origin[0] + size_px, origin[1] + size_px], outline=_TRACK)
        loss = f"loss {frame_data.loss:.3f} nats" if np.isfinite(frame_data.loss) else "untrained"
        _caption(draw, f"step {frame_data.step} / {total}", loss, title, "model density q_K and samples", frame.width,
                 fonts)
        chart_top = origin[1] + size_px + 8
        _loss_chart(draw, steps, losses, i, (origin[0], chart_top, origin[0] + size_px, chart_top + chart_height),
                    fonts[2])
        images.append(frame)
        durations.append(final_ms if i == len(frames) - 1 else frame_ms)
    return _encode_gif(images, durations)


def _loss_chart(draw, steps: np.ndarray, losses: np.ndarray, current: int, box: tuple[int, int, int, int],
                font) -> None:
    """The loss against the step: the whole run as a faint line, the part up to frame `current` in
    colour with a dot at it. The top of the scale is the 95th percentile, so the first steps' large
    losses do not flatten the rest."""
    x0, y0, x1, y1 = box
    finite = np.isfinite(losses)
    label = "loss (nats)"
    draw.text((x1 - draw.textlength(label, font=font), y0), label, font=font, fill=_GREY)
    if not finite.any():
        return
    lo, hi = float(losses[finite].min()), float(np.quantile(losses[finite], 0.95))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    left, top, bottom = x0 + 40, y0 + 6, y1 - 6
    draw.text((x0, top - 6), f"{hi:.3g}", font=font, fill=_GREY)
    draw.text((x0, bottom - 10), f"{lo:.3g}", font=font, fill=_GREY)
    span = max(float(steps.max() - steps.min()), 1.0)
    xs = left + (x1 - left) * (steps - steps.min()) / span
    ys = bottom - (bottom - top) * (np.clip(losses, lo, hi) - lo) / (hi - lo)
    line = [(float(x), float(y)) for x, y, ok in zip(xs, ys, finite) if ok]
    done = [(float(x), float(y)) for x, y, ok in zip(xs[: current + 1], ys[: current + 1], finite[: current + 1]) if ok]
    if len(line) > 1:
        draw.line(line, fill=_TRACK, width=1)
    if len(done) > 1:
        draw.line(done, fill=_ACCENT, width=2)
    x = float(xs[current])
    if finite[current]:
        y = float(ys[current])
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=_ACCENT)
    else:  # no loss yet (the untrained model): mark the step
        draw.line([(x, top), (x, bottom)], fill=_ACCENT, width=1)


# -- Samples ---------------------------------------------------------------------------------------------


@torch.no_grad()
def samples_csv(flow: Flow, n: int = 2000, seed: int = 0) -> bytes:
    """`n` samples of q_K (in eval mode; the flow's mode is kept) as CSV with the header `x,y`.
    The same flow, n and seed give the same bytes."""
    with flow.evaluating():
        points = flow.sample(n, torch.Generator().manual_seed(seed)).float().cpu().numpy()
    lines = ["x,y"] + [f"{x:.7g},{y:.7g}" for x, y in points.tolist()]
    return ("\n".join(lines) + "\n").encode()
