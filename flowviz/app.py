"""flowviz in the browser: `panel serve flowviz/app.py`.

A placeholder until the explorer lands (issue 3): pick a preset, read what it shows, and see the
per-layer views of its untrained flow, drawn by the same core the CLI uses.
"""

from __future__ import annotations

import io
from pathlib import Path

import panel as pn

from flowviz.core.build import build_flow, build_target
from flowviz.core.spec import ExperimentSpec
from flowviz.figures import render_flow

PRESETS = Path(__file__).resolve().parent.parent / "presets"


def preset_views(path: str) -> pn.Column:
    spec = ExperimentSpec.load(path)
    image = io.BytesIO()
    render_flow(build_flow(spec), build_target(spec.target, spec.seed), spec, image, resolution=96, samples=1500)
    return pn.Column(
        pn.pane.Markdown(f"## {spec.title}\n\n{spec.description}\n\n*Untrained. Train it headless with* "
                         f"`flowviz train presets/{Path(path).name} --out run`."),
        pn.pane.PNG(image.getvalue(), sizing_mode="scale_width"),
    )


def create_app() -> pn.viewable.Viewable:
    presets = {p.stem: str(p) for p in sorted(PRESETS.glob("*.json"))}
    picker = pn.widgets.Select(name="Preset", options=presets)
    return pn.Column(
        pn.pane.Markdown("# flowviz\nAn explorer for 2-D normalizing flows. The live explorer is on its way; "
                         "meanwhile this page shows each preset's flow, layer by layer."),
        picker,
        pn.bind(preset_views, picker),
        sizing_mode="stretch_width",
    )


if __name__.startswith("bokeh"):
    pn.extension()
    create_app().servable(title="flowviz")
