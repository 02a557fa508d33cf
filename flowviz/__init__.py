"""flowviz: an explorer for 2-D normalizing flows.

In the browser, `flowviz serve`; headless, `flowviz train`; in a Jupyter notebook, `explore`.
Importing flowviz imports nothing heavy: the core (torch) and the UI (Panel) load when used.
"""

from __future__ import annotations

from pathlib import Path


def explore(preset: str | Path = "realnvp-moons"):
    """The live explorer in a Jupyter notebook cell, on a shipped preset (by name) or a preset file.

    Show the returned explorer as a cell's last value; it trains in its own threads when you press
    Play. `explorer.state` is the session's state (its `spec`, `live.trainer`, `frame`, ...), as in
    the browser app; `explorer.close()` stops its threads.

    Example:
        >>> explorer = explore("spline-8gaussians")
        >>> explorer.state.spec.title
        'Rational-quadratic splines on 8 Gaussians'
        >>> explorer.close()
    """
    import panel as pn

    from flowviz.core.presets import preset_path
    from flowviz.core.spec import ExperimentSpec
    from flowviz.ui.explorer import Explorer

    pn.extension("katex", notifications=False, inline=True)  # the page loads nothing from the internet
    explorer = Explorer(ExperimentSpec.load(preset_path(preset)))
    explorer.start(notebook=True)
    return explorer
