"""flowviz in the browser: `flowviz serve [PRESET]`, or from a checkout `panel serve flowviz/app.py`.

Panel runs this file once per browser session, so every session gets its own `Explorer` (model,
threads, plots). A `?spec=...` link opens that experiment; without one a page opens the preset
given after `--args` (`flowviz serve` passes it), else realnvp-moons.
"""

from __future__ import annotations

import os
import sys
import weakref

import panel as pn
import torch
from panel.io.resources import get_dist_path
from tornado.ioloop import IOLoop

from flowviz.core.limits import LIMITS
from flowviz.core.link import LINK_PARAMETER
from flowviz.core.presets import DEFAULT_PRESET
from flowviz.ui.ahead import PageAhead
from flowviz.ui.explorer import Explorer
from flowviz.ui.layout import SIDEBAR_PX
from flowviz.ui.live import ComputeGate
from flowviz.ui.plots import leave_dimmed_copies_to_the_page
from flowviz.ui.serving import (
    closed_page_writes_are_not_errors,
    messages_in_one_write,
    messages_refer_to_models_by_need,
)
from flowviz.ui.state import open_link

TITLE = "flowviz · normalizing flows, layer by layer"


def open_sessions() -> int:
    """Sessions this server process serves now: the session cap counts these."""
    context = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
    return live_sessions(context.server_context.sessions, loaded_pages()) if context is not None else 0


def live_sessions(sessions, loaded) -> int:
    """Of Bokeh's sessions, those with a page connected and those whose page is still loading
    (never loaded); not the closed tabs Bokeh keeps until they expire (15-32 s after closing), which
    refused a class's reloads while the server was only half full.

    Example:
        >>> from types import SimpleNamespace as Session
        >>> connected, loading, closed = (Session(connection_count=n, document=object()) for n in (1, 0, 0))
        >>> live_sessions([connected, loading, closed], loaded={connected.document, closed.document})
        2
    """
    return sum(1 for session in sessions if session.connection_count > 0 or session.document not in loaded)


def loaded_pages() -> weakref.WeakSet:
    """The documents whose page has loaded, once: one set per process, shared by its sessions like the
    compute gate; it holds no session's data, and forgets a document once its session is gone."""
    return pn.state.as_cached("flowviz-loaded-pages", weakref.WeakSet)


def compute_gate() -> ComputeGate:
    """The one gate this process's sessions share: as many heavy jobs at once as it has cores."""
    return ComputeGate(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def server_full() -> pn.template.BootstrapTemplate:
    message = (f"This flowviz server is full: it serves at most {LIMITS.max_sessions} sessions at once, so "
               "that every one of them keeps training smoothly. Close another tab or try again in a minute; "
               "a teacher can start more server processes (see the README: serving a classroom).")
    return pn.template.BootstrapTemplate(title=TITLE, main=[pn.pane.Alert(message, alert_type="warning")],
                                         header_background="#1d3557", busy_indicator=None)


def serve_styles_locally() -> None:
    """Make this session's components name the server's own style sheets from the start.

    Panel writes a page's resource address into its document only when it renders the page's
    HTML; until then new components name cdn.holoviz.org, and the page render rewrites them. A
    session that no page render ever sees keeps the CDN addresses: the one Bokeh builds when a
    page's websocket arrives after the session its HTML made has expired as unused (a page that
    took longer to load than the server's unused-session lifetime), or arrives at another process.
    That page then asked the CDN for every style, which fails offline (the flaky browser test)."""
    doc = pn.state.curdoc
    if doc is not None and "dist_url" not in doc._template_variables:
        doc._template_variables["dist_url"] = get_dist_path(cdn=False)  # what Panel's page render sets


def pages_ahead() -> PageAhead:
    """The process's one `PageAhead`, shared by its sessions like the compute gate."""
    return pn.state.as_cached("flowviz-page-ahead", PageAhead)


def create_app(link: str | None = None, preset: str = DEFAULT_PRESET) -> pn.template.BootstrapTemplate:
    serve_styles_locally()
    if open_sessions() > LIMITS.max_sessions:
        return server_full()  # no model, no threads: the sessions already here keep their share
    gate = pn.state.as_cached("flowviz-compute-gate", compute_gate)
    spec, problem = open_link(link, preset)
    served = pn.state.curdoc is not None
    explorer = pages_ahead().take(spec) if served else None
    if explorer is None:
        explorer = Explorer(spec, gate=gate, served=served)
    explorer.state.say(problem)
    template = pn.template.BootstrapTemplate(
        title=TITLE, sidebar=explorer.sidebar(), main=explorer.main(), sidebar_width=SIDEBAR_PX,
        header_background="#1d3557", busy_indicator=None,  # it would flicker on every frame, at a cost
        collapsed_sidebar=explorer.sidebar_hidden(), header=[explorer.screen, explorer.clock],
    )
    explorer.start()
    document = pn.state.curdoc
    if document is not None and document.session_context is not None:
        pn.state.onload(lambda: loaded_pages().add(document))
        pn.state.onload(lambda: pages_ahead().prepare(spec, gate))  # (once this page is up: not competing with it)
    template.explorer = explorer  # for tests and tools that drive a served page
    return template


def _link_from_request() -> str | None:
    values = pn.state.session_args.get(LINK_PARAMETER) if pn.state.curdoc is not None else None
    return values[0].decode("utf-8", "replace") if values else None


def serve_page() -> pn.template.BootstrapTemplate:
    """Set up this process for serving (once; each call after the first changes nothing) and make
    this session's page servable: what `panel serve flowviz/app.py` runs for every page, and
    bench/app_probe.py too, so the benchmarks measure the app as served."""
    # Each session trains in its own threads; one intra-op thread each keeps sessions from
    # oversubscribing the cores (small 2-D models gain nothing from more).
    torch.set_num_threads(1)
    # Training and rendering threads share the GIL; a 1 ms switch interval (default 5 ms) lets the
    # rendering thread's short Python stretches interleave with training instead of stalling it.
    # Measured with the realnvp-moons preset: in-app steps/s rose from ~60% to ~90% of headless.
    sys.setswitchinterval(0.001)
    closed_page_writes_are_not_errors(IOLoop.current().asyncio_loop)
    messages_refer_to_models_by_need()
    messages_in_one_write()
    pn.extension("katex", notifications=False)
    # `panel serve flowviz/app.py --args PRESET` (what `flowviz serve PRESET` runs) sets sys.argv.
    # While this page is built, the process's training steps and live frames wait (those under way
    # finish): the build runs on the event loop every session shares, and under a class's training it
    # waited for the GIL behind them.
    with pn.state.as_cached("flowviz-compute-gate", compute_gate).held():
        app = create_app(_link_from_request(), sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PRESET)
        # Bokeh walks the document's whole model graph after each root the template adds (21 roots,
        # ~600 models); frozen, it walks it once: a page's document is built in 0.7 s instead of 1.9-2.4 s.
        with pn.state.curdoc.models.freeze():
            app.servable(title="flowviz")
            leave_dimmed_copies_to_the_page(model for root in pn.state.curdoc.roots for model in root.references())
    return app


if __name__.startswith("bokeh"):
    serve_page()
