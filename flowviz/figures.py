"""Static figures of the per-layer views (for the CLI and reports), drawn with matplotlib.

Columns are depths k = 0..K (at most `max_columns`, evenly spaced, always with the base and the
output) plus the target; rows are the density q_k, layer k's ln|det J_k|, and the samples z_k over
the warped base grid, coloured by where each sample started.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import torch  # noqa: E402

from flowviz.core.flow import Flow  # noqa: E402
from flowviz.core.grid import GridRequest, GridViews, evaluate_grid, target_image  # noqa: E402
from flowviz.core.spec import ExperimentSpec  # noqa: E402
from flowviz.core.targets import Target  # noqa: E402


def start_colors(samples0: np.ndarray) -> np.ndarray:
    """A colour per sample from its angle and radius in the base, so it can be followed."""
    angle = (np.arctan2(samples0[:, 1], samples0[:, 0]) + np.pi) / (2 * np.pi)
    radius = np.clip(np.linalg.norm(samples0, axis=1) / 3, 0, 1)
    hsv = np.stack([angle, 0.35 + 0.65 * radius, np.full_like(angle, 0.85)], 1)
    return matplotlib.colors.hsv_to_rgb(hsv)


def depth_columns(depth: int, max_columns: int) -> list[int]:
    if depth + 1 <= max_columns:
        return list(range(depth + 1))
    return sorted(set(np.linspace(0, depth, max_columns).round().astype(int).tolist()))


def render_views(views: GridViews, layer_titles: list[str], target_density: np.ndarray | None, path: str | Path,
                 max_columns: int = 9) -> None:
    depths = depth_columns(len(views.layers), max_columns)
    columns = len(depths) + 1
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_flow(flow: Flow, target: Target, spec: ExperimentSpec, path, resolution: int | None = None,
                samples: int = 2000) -> None:
    """Evaluate `flow` on the spec's view (optionally at another resolution) and draw its views,
    with `samples` base samples seeded from the spec, beside the target."""
    view = spec.view if resolution is None else {**spec.view, "resolution": resolution}
    request = GridRequest.from_view(view)
    base_samples = flow.base.sample(samples, torch.Generator().manual_seed(spec.seed)).detach()
    views = evaluate_grid(flow, request, base_samples)
    titles = [flow.layers[i].info.title for i in views.layers]
    render_views(views, titles, target_image(target, request, seed=spec.seed), path)
