"""The explorer page: one `Explorer` per browser session, composed of small views over one state.

The `ExperimentState` (state.py) is the session's single source of truth; every view takes it,
writes to it and redraws from it. The explorer only builds the views, lays them out, shows or hides
the panels and sizes them from the spec's presentation, and drives the frames.

Example:
    >>> explorer = Explorer(ExperimentSpec.load("presets/realnvp-moons.json"))
    >>> explorer.layer_editor.stack.act({"action": "add", "type": "planar"})
    >>> len(explorer.state.spec.layers), len(explorer.strips.density.images.data["density"])
    (9, 10)
    >>> explorer.close(); explorer.state.playing
    False
"""

from __future__ import annotations

import functools
from pathlib import Path

import panel as pn
import param
from panel.io.callbacks import PeriodicCallback

from flowviz.core.presets import DEFAULT_PRESET
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.cards import BaseCard, ExperimentCard, PresentationCard, TargetCard, TrainingCard
from flowviz.ui.hand import HandView
from flowviz.ui.keep import KeepView
from flowviz.ui.layout import FOLD_SIDEBAR_BELOW, PANEL_NAMES, SIDEBAR_PANELS, Sizes, main_width
from flowviz.ui.live import VIEWS_PANELS, ComputeGate
from flowviz.ui.pickers import FrameClock, InView, Screen
from flowviz.ui.state import ExperimentState, open_link
from flowviz.ui.views import LayerEditor, LedgerView, Overview, StripsView, Toolbar

TICK_MS = 25  # in a notebook, how often the page looks for a new frame; frames come at most MAX_FPS
# In a server session a new frame and the page's "painted" wake the tick at once; this slow tick only
# notices a page that stopped answering and a diverged run. Polling at TICK_MS cost every session 40
# callbacks a second on the event loop all sessions share, busy or not.
FALLBACK_TICK_MS = 250
# Below the fold on a new page (~170 of its ~580 Bokeh models): a served page gets them once it has
# loaded, so its first view, the buttons, the model and the density strip, is built and drawn sooner.
BUILT_AFTER_LOAD = ("log_det", "samples")


class Explorer(pn.viewable.Viewer):
    """Everything one browser session sees and does."""

    state = param.ClassSelector(class_=ExperimentState)
    screen = param.ClassSelector(class_=Screen, doc="the browser window's width (for the template's header)")
    clock = param.ClassSelector(class_=FrameClock, doc="frames sent and painted (for the template's header)")

    def __init__(self, spec: ExperimentSpec | None = None, gate: ComputeGate | None = None, served: bool = False,
                 ahead: bool = False, **params):
        """`served`: a server session's explorer, whose frames the rendering thread computes (`start`).
        `ahead`: built before its page asked for it, off the event loop (ui/ahead.py's `PageAhead`): its
        first frame is computed here, exact, and no thread starts before `start`."""
        self.built_ahead = ahead
        super().__init__(state=ExperimentState(spec, gate=gate, exact_in_background=served and not ahead),
                         screen=Screen(fold_below=FOLD_SIDEBAR_BELOW, margin=0), clock=FrameClock(margin=0), **params)
        state = self.state
        self.experiment, self.target, self.base = ExperimentCard(state), TargetCard(state), BaseCard(state)
        self.training, self.presentation = TrainingCard(state), PresentationCard(state)
        self.toolbar, self.layer_editor = Toolbar(state), LayerEditor(state)
        self.overview, self.strips, self.ledger = Overview(state), StripsView(state), LedgerView(state)
        self.hand = HandView(state)
        self.keeper = KeepView(state)
        ledger = pn.Card(self.ledger, title="Follow a point: the change-of-variables ledger",
                         sizing_mode="stretch_width", collapsible=True, margin=(4, 0))
        views = {"experiment": self.experiment, "target": self.target, "base": self.base, "training": self.training,
                 "layers": self.layer_editor, "overview": self.overview, "ledger": ledger, **self.strips.panels}
        # Each in a plain column that shows or hides it: a Card's own `visible` did not hide it in the
        # template (tests/test_browser.py checks every panel).
        self._after_load = {name: views.pop(name) for name in BUILT_AFTER_LOAD} if served else {}
        self.panels = {name: pn.Column(view, sizing_mode="stretch_width", margin=0) for name, view in views.items()}
        self.panels.update({name: pn.Column(sizing_mode="stretch_width", margin=0) for name in self._after_load})
        # The panels that show frames report whether they are on screen: frames skip the ones that are not.
        self.in_view = {name: InView(margin=0, height=0, width=0, panel=name) for name in VIEWS_PANELS}
        for name, marker in self.in_view.items():
            self.panels[name].insert(0, marker)
            marker.param.watch(functools.partial(self._seen, name), "in_view")
        assert set(self.panels) == set(PANEL_NAMES), "every hideable panel is laid out, and only those"
        self._presented = None
        self._present()
        self._callback = None
        # A served page takes frames only once it has loaded: a frame shown while it was still
        # loading reached it in part (the new images, but neither their colour mapping nor the
        # strips' title: the strips stayed blank under "coarse preview" until the next frame).
        self._page_loaded = not served

    @param.depends("state.spec", "screen.window_width", watch=True)
    def _present(self) -> None:
        """Show and hide the panels as the spec's presentation says, and size every view for it and
        for the window."""
        presentation, window = self.state.spec.presentation, self.screen.window_width
        if (presentation, window) == self._presented:
            return
        self._presented = (presentation, window)
        for name, viewable in self.panels.items():
            viewable.visible = name not in presentation.hidden
        sidebar_shown = window >= FOLD_SIDEBAR_BELOW and not self.sidebar_hidden()
        sizes = Sizes.of(presentation.projector, main_width(window, sidebar_shown) if window else None)
        for view in (self.toolbar, self.overview, self.strips, self.ledger, self.hand):
            view.set_sizes(sizes)

    def _seen(self, name: str, event: param.parameterized.Event) -> None:
        unseen = set(self.state.unseen) - {name} if event.new else set(self.state.unseen) | {name}
        self.state.unseen = sorted(unseen)

    @classmethod
    def from_link(cls, value: str | None, gate: ComputeGate | None = None,
                  preset: str | Path = DEFAULT_PRESET, served: bool = False) -> tuple[Explorer, str]:
        """An explorer for a shared link's experiment (`preset`'s without a link), and what could not
        be used of the link."""
        spec, problem = open_link(value, preset)
        explorer = cls(spec, gate=gate, served=served)
        explorer.state.say(problem)
        return explorer, problem

    # -- the session -------------------------------------------------------------------------------
    def start(self, notebook: bool = False) -> None:
        """Begin pushing frames to this session's page: inside a server session, or with
        `notebook=True` in a Jupyter kernel (`flowviz.explore`), whose event loop runs the ticks."""
        doc = pn.state.curdoc
        if self._callback is not None or (doc is None and not notebook):
            return
        # In the background: otherwise Panel marks the app busy and idle around every tick, and
        # the watchers of `pn.state.busy` cost ~10% of the event loop at 25 ticks a second.
        # log=False: Panel logs two INFO lines per periodic call otherwise.
        self._callback = PeriodicCallback(callback=self.tick, period=TICK_MS if doc is None else FALLBACK_TICK_MS,
                                          background=True, log=False)
        self._callback.start()
        self.state.exact_in_background = True
        if doc is not None:
            # Bokeh's documented way in from another thread (the rendering thread publishes frames).
            wake = functools.partial(self._wake, doc)
            self.state.live.on_publish = self.clock.on_painted = wake
        if notebook:
            self._page_loaded = True
        else:
            pn.state.onload(self.experiment.show_link)  # the page's own address is known once it has loaded
            pn.state.onload(self._loaded)
            pn.state.on_session_destroyed(lambda _context: self.close())

    def _wake(self, doc) -> None:
        """From the rendering thread: a tick on the session's event loop, to show the new frame."""
        try:
            doc.add_next_tick_callback(self.tick)
        except AttributeError:
            # A page closed while its frame was on the way: Bokeh destroyed the document (and removed
            # its callback registry) before `close` stopped this thread. Nothing to show it on. Seen
            # in `bench/soak.py --cycles`: it ended the rendering thread with a traceback in the log.
            pass

    @property
    def page_loaded(self) -> bool:
        """Whether this session's page has loaded (and so takes frames and has every panel built)."""
        return self._page_loaded

    def _loaded(self) -> None:
        for name, view in self._after_load.items():
            self.panels[name].append(view)
        self._after_load = {}
        self._page_loaded = True
        self.tick()

    def tick(self) -> None:
        """Show the newest frame, all its changes in one message, while the page has fewer frames on
        their way than the clock allows (woken by a new frame or the page's answer, and by the
        periodic callback)."""
        # Over its budget (a class), a page has one frame on its way and answers each. Otherwise it
        # answers every second frame, and may have three on their way: after an answer, one or
        # none; so that the next travels while the page paints the last.
        one_at_a_time = self.state.live.over_budget()
        with pn.io.hold():
            if self.state.tick(take=self._page_loaded and self.clock.ready(1 if one_at_a_time else 3)):
                self.clock.sent(every_frame=one_at_a_time)
        if self._page_loaded:
            self.keeper.keep()

    def close(self) -> None:
        self.state.live.on_publish = self.clock.on_painted = None
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.state.close()

    # -- layout ------------------------------------------------------------------------------------
    def sidebar_hidden(self) -> bool:
        """True when every sidebar panel is hidden (the page can then fold the sidebar away)."""
        return all(name in self.state.spec.presentation.hidden for name in SIDEBAR_PANELS)

    def sidebar(self) -> list:
        return [self.panels[name] for name in SIDEBAR_PANELS]

    def main(self) -> list:
        """The views in reading order: what to do, what it does (target, model, density), then the rest."""
        panels = self.panels
        return [self.toolbar, self.toolbar.explanation, self.toolbar.alert, self.keeper, panels["overview"], self.hand,
                panels["density"], panels["layers"], panels["ledger"], panels["log_det"], panels["samples"],
                self.presentation]

    def __panel__(self):
        # Outside the template (a notebook cell) the window reporter and the frame clock ride along
        # in the main column: without the clock's answers a page gets one frame a second.
        return pn.Row(pn.Column(*self.sidebar(), width=360),
                      pn.Column(pn.Row(self.screen, self.clock, height=0, margin=0), *self.main(),
                                sizing_mode="stretch_width"))
