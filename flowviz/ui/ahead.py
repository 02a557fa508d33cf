"""The next page's explorer, built before that page asks for it (see `PageAhead`)."""

from __future__ import annotations

import logging
import threading

import panel as pn
from bokeh.document import Document

from flowviz.core.spec import ExperimentSpec
from flowviz.ui.explorer import Explorer
from flowviz.ui.live import ComputeGate


class PageAhead:
    """The next page's explorer, built before that page asks for it: on a thread of its own, once a
    page has loaded, for the experiment that page opened (a class opens one link; a reload opens the
    page it reloads). A page of that experiment then takes it instead of building one on the event
    loop every session shares: 0.6 s of its document's build instead of 1.5 s (realnvp-moons, an
    idle process). It holds no session's data until a page takes it, and each explorer it built
    goes to one page only.

    One per server process, in `pn.state.cache` like the compute gate (app.py's `pages_ahead`). It
    is defined here, not in app.py: Bokeh clears the namespace of a page's run of app.py when that
    page's session ends, and an object shared past the session could not use it then (NameError).

    Example:
        >>> from flowviz.core.presets import preset_path
        >>> from flowviz.core.spec import ExperimentSpec
        >>> moons = ExperimentSpec.load(preset_path("realnvp-moons"))
        >>> ahead = PageAhead()
        >>> ahead.prepare(moons, ComputeGate(1))
        >>> explorer = ahead.take(moons, wait=30)
        >>> explorer.built_ahead, explorer.state.frame.kind, explorer.state.live.running
        (True, 'exact', False)
        >>> ahead.take(moons) is None  # (each one goes to one page)
        True
        >>> explorer.close()
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._ready: Explorer | None = None
        self._building: ExperimentSpec | None = None
        self._built = threading.Condition(self._lock)

    def take(self, spec: ExperimentSpec, wait: float = 3.0) -> Explorer | None:
        """The explorer built ahead for `spec`, or None. One still being built for it is waited for,
        up to `wait` seconds: less than building another beside it on the two cores it would share."""
        with self._lock:
            self._built.wait_for(lambda: self._building != spec, timeout=wait)
            if not self._ready_for(spec):
                return None
            ready, self._ready = self._ready, None
            return ready

    def has(self, spec: ExperimentSpec) -> bool:
        """Whether an explorer for `spec` is built and not yet taken."""
        with self._lock:
            return self._ready_for(spec)

    def _ready_for(self, spec: ExperimentSpec) -> bool:  # (under the lock)
        return self._ready is not None and self._ready.state.spec == spec

    def prepare(self, spec: ExperimentSpec, gate: ComputeGate) -> None:
        """Start building an explorer for `spec` unless one is built or being built."""
        with self._lock:
            if self._building is not None or self._ready_for(spec):
                return
            self._building = spec
        threading.Thread(target=self._build, args=(spec, gate), name="flowviz-page-ahead", daemon=True).start()

    def _build(self, spec: ExperimentSpec, gate: ComputeGate) -> None:
        # This thread's own document: Panel would otherwise take whichever page's document the event
        # loop is serving at that moment as the current one.
        pn.state.curdoc = Document()
        explorer = None
        try:
            explorer = Explorer(spec, gate=gate, served=True, ahead=True)
        except Exception:  # (a page then builds its own, as it would without this)
            logging.getLogger(__name__).exception("building the next page ahead failed")
        replaced = None
        with self._lock:
            if explorer is not None:
                replaced, self._ready = self._ready, explorer
            self._building = None
            self._built.notify_all()
        if replaced is not None:
            replaced.close()
