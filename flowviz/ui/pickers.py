"""Small widgets the explorer needs that Panel lacks: target thumbnails, and a file button that checks
the size in the browser."""

from __future__ import annotations

import base64
import functools
import io
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import panel as pn
import param
from panel.custom import JSComponent
from panel.io.state import set_curdoc
from PIL import Image

from flowviz.core.grid import GridRequest, target_image
from flowviz.core.targets import TARGETS
from flowviz.ui.plots import DENSITY_PALETTE


@functools.cache
def _thumbnail(name: str, size: int = 56) -> str:
    """A PNG data URL of target `name`'s density: computed once per process, read-only after."""
    density = target_image(TARGETS[name](), GridRequest(resolution=size), samples=20_000)
    top = float(np.quantile(density, 0.995)) or 1.0
    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in DENSITY_PALETTE], np.uint8)
    rgba = palette[np.rint(np.clip(density / top, 0, 1)[::-1] * (len(palette) - 1)).astype(np.intp)]
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


PICKER_ORDER = ("energy", "toy", "picture")  # target kinds, as the picker's tiles follow each other


def target_options() -> list[dict[str, str]]:
    shown = sorted((entry for entry in TARGETS.values() if entry.info.kind in PICKER_ORDER),
                   key=lambda entry: PICKER_ORDER.index(entry.info.kind))
    return [{"name": entry.info.name, "title": entry.info.title, "kind": entry.info.kind,
             "description": entry.info.description, "src": _thumbnail(entry.info.name)} for entry in shown]


class TargetPicker(JSComponent):
    """A grid of target thumbnails; clicking (or Enter on) one sets `value`."""

    options = param.List(default=[])
    value = param.String(default="")

    # A click arrives as a message, handled under the document's lock like every other event:
    # a property set from the browser was applied outside it, and the page's redraw then failed.
    def _handle_msg(self, data) -> None:
        names = {option["name"] for option in self.options}
        if isinstance(data, dict) and data.get("value") in names:
            self.value = data["value"]

    _esm = """
export function render({ model }) {
  const grid = document.createElement('div'); grid.className = 'fv-targets';
  function draw() {
    grid.replaceChildren(...model.options.map(o => {
      const tile = document.createElement('button');
      tile.className = 'fv-target' + (o.name === model.value ? ' fv-chosen' : '');
      tile.title = `${o.title}: ${o.description}`; tile.dataset.name = o.name;
      tile.setAttribute('aria-pressed', String(o.name === model.value));
      const img = document.createElement('img'); img.src = o.src; img.alt = '';
      const label = document.createElement('span'); label.textContent = o.title;
      tile.append(img, label);
      tile.addEventListener('click', () => model.send_msg({ value: o.name }));
      return tile; }));
  }
  draw(); model.on('value', draw); model.on('options', draw);
  return grid;
}"""
    _stylesheets: ClassVar[list[str]] = ["""
.fv-targets { display: grid; grid-template-columns: repeat(4, 1fr); gap: 5px; }
.fv-target { display: flex; flex-direction: column; align-items: center; gap: 2px; padding: 3px; cursor: pointer;
  border: 2px solid transparent; border-radius: 6px; background: #f7f8fa; font-size: 11px; color: #334; }
.fv-target img { width: 100%; max-width: 56px; aspect-ratio: 1; border-radius: 3px; image-rendering: pixelated; }
.fv-target span { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 100%; }
.fv-target:hover { background: #e7edf7; }
.fv-target.fv-chosen { border-color: #2a6fdb; background: #eaf1ff; font-weight: 600; }
.fv-target:focus-visible { outline: 3px solid #2a6fdb; }
"""]


class FileUpload(JSComponent):
    """A file button that checks the size in the browser before sending anything.

    Panel's FileInput sends any file over the websocket, and one past the server's message limit
    (20 MB) drops the connection. This one refuses a file over `max_bytes` with a message, and
    sends smaller ones as base64 in a single message; `value` and `filename` change together.
    """

    accept = param.String(default="")
    max_bytes = param.Integer(default=10 * 1024 * 1024)
    label = param.String(default="Choose a file")
    filename = param.String(default="")
    value = param.Bytes(default=None, allow_None=True, doc="the file's bytes, once received")
    error = param.String(default="", doc="why the last file was refused in the browser")

    _esm = """
export function render({ model }) {
  const input = document.createElement('input'); input.type = 'file'; input.accept = model.accept;
  input.className = 'fv-file'; input.setAttribute('aria-label', model.label);
  input.addEventListener('change', () => {
    const file = input.files[0]; if (!file) return;
    if (file.size > model.max_bytes) {
      model.send_msg({ name: file.name, error: `is ${(file.size / 1048576).toFixed(1)} MB; files up to ${(model.max_bytes / 1048576).toFixed(0)} MB are accepted` });
      input.value = ''; return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      const url = reader.result; model.send_msg({ name: file.name, data: url.slice(url.indexOf(',') + 1) });
      input.value = '';
    };
    reader.readAsDataURL(file);
  });
  model.on('accept', () => { input.accept = model.accept; });
  return input;
}"""
    _stylesheets: ClassVar[list[str]] = [".fv-file { width: 100%; font-size: 14px; padding: 6px; border: 1px dashed #c5cbd6; border-radius: 6px; }"]

    def _handle_msg(self, data) -> None:
        if not isinstance(data, dict):
            return
        name = str(data.get("name", ""))[:200]
        if "error" in data:
            self.param.update(filename=name, error=f"{name} {data['error']}")
            return
        try:
            content = base64.b64decode(str(data.get("data", "")), validate=True)
        except ValueError:
            self.param.update(filename=name, error=f"{name} did not arrive intact; try again")
            return
        self.value = None  # so that the same file, sent again, is a change too
        self.param.update(filename=name, error="", value=content)


def set_under_document_lock(component: param.Parameterized, name: str, value) -> None:
    """Set a parameter from a page's message so that the views it wakes edit Bokeh models under the
    document's lock: on the next tick in a server session (the message may come before it), at once
    outside one."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        setattr(component, name, value)
    else:
        doc.add_next_tick_callback(lambda: setattr(component, name, value))


class InView(JSComponent):
    """Whether the panel this sits in is on screen: a marker that watches its enclosing layout with an
    IntersectionObserver and reports each change (`in_view`). Views skip the panels nobody sees (scrolled
    away, or hidden) and draw them from the newest frame when they come into view: at 1680×1300 the
    ln|det J| and sample strips are below the fold, yet were sent and painted with every frame.
    """

    in_view = param.Boolean(default=True, doc="any part of the enclosing panel is on screen")
    panel = param.String(default="", doc="the panel's name, on the page as the marker's data-panel")

    # For tools that read a page (Playwright's page.evaluate): {panel: "true" | "false" | "unreported"},
    # what each marker last reported (bench/classroom.py --screen, tests/test_browser.py).
    REPORTED_ON_PAGE = """() => {
  const found = {};
  const visit = (root) => {
    for (const node of root.querySelectorAll('*')) {
      if (node.dataset && node.dataset.panel) found[node.dataset.panel] = node.dataset.inView ?? 'unreported';
      if (node.shadowRoot) visit(node.shadowRoot);
    }
  };
  visit(document);
  return found;
}"""

    def _handle_msg(self, data) -> None:
        if not (isinstance(data, dict) and isinstance(data.get("in_view"), bool)):
            return
        set_under_document_lock(self, "in_view", data["in_view"])  # the views draw a panel that comes into view

    _esm = """
export function render({ model }) {
  const marker = document.createElement('span');
  marker.dataset.panel = model.panel;  // (tools that read the page: data-in-view says what it reported)
  let observer = null;
  model.on('after_render', () => {
    // This component's element sits in its layout's shadow root; that root's host is the panel.
    const own = marker.getRootNode().host;
    const root = own ? own.getRootNode() : null;
    const panel = root && root.host ? root.host : (own ? own.parentElement : null);
    if (!panel || observer) return;
    let last = null;
    observer = new IntersectionObserver((entries) => {
      const seen = entries[entries.length - 1].isIntersecting;
      if (seen !== last) { last = seen; marker.dataset.inView = seen; model.send_msg({ in_view: seen }); }
    }, { rootMargin: '80px' });
    observer.observe(panel);
  });
  model.on('remove', () => { if (observer) observer.disconnect(); });
  return marker;
}"""


class Screen(JSComponent):
    """The width of the browser window, for sizing the views (`window_width`, 0 until the page reports it).

    On a screen narrower than `fold_below` pixels (a tablet) it also folds the template's sidebar
    away when the page opens, so the views get the width; the header's ☰ button opens it again.
    """

    # Not `width`: that is Panel's own size of this component, and setting it resized the header's
    # empty span to the window's width (and restyled it) on every report.
    window_width = param.Integer(default=0, doc="window.innerWidth, in CSS pixels")
    fold_below = param.Integer(default=1000)

    def _handle_msg(self, data) -> None:
        if not (isinstance(data, dict) and isinstance(data.get("width"), int) and 0 < data["width"] < 100_000):
            return
        set_under_document_lock(self, "window_width", data["width"])  # the views resize Bokeh models

    _esm = """
export function render({ model }) {
  if (window.innerWidth < model.fold_below) {
    document.getElementById('sidebar')?.classList.remove('show');
    document.getElementById('sidebar-toggle')?.setAttribute('aria-expanded', 'false');
  }
  let timer = null;
  const report = () => model.send_msg({ width: Math.round(window.innerWidth) });
  window.addEventListener('resize', () => { clearTimeout(timer); timer = setTimeout(report, 300); });
  report();
  return document.createElement('span');
}"""


ANSWER_EVERY = 2  # frames a page answers once, while it may have more than one on its way
SEND_TIMES_KEPT = 8  # of frames on their way to a page; a page has at most 3, a silent one more


class FrameClock(JSComponent):
    """Frames shown and frames the page has painted, so that a page never has more than a few frames
    on their way (`ready`). Without it, frames queue in the socket and the page falls seconds behind
    (and a click's effect shows only after the queue), when its machine cannot paint as fast as the
    server sends. With one on its way at most, the next frame waited for the whole round trip (send,
    paint, answer: ~70 ms in Chromium on 2 busy cores), so that alone capped a page at ~13 frames/s;
    with two, the next travels while the page paints the last (bench/app_rate.py: 15.6-17.9
    against 13.0 frames/s, alternated). A server over its budget (a class of 30) gets one at a
    time: there a frame's round trip is not what limits, and a second frame ahead of a Pause's
    effect made clicks slower (click_ms_p95 over 1 s in 2 of 4 runs of bench/classroom.py).

    Each answer is a message through Bokeh's whole receiving path on the event loop every session
    shares (parse, document patch, event dispatch, a reply): py-spy put ~15% of the loop's time in
    them. So a frame says whether the page should answer it (`sent(every_frame=False)`: every
    ANSWER_EVERY-th frame); an answer counts every frame up to it as painted.

    It also takes two costs out of every paint in BokehJS 3.9 (its page sets them up, once):
    - A CSS variable (`--bk-text-color`, `--bk-fill-alpha`, ...) may override any visual property,
      so each paint of a title, an axis or a colour bar asks `getComputedStyle` for every property
      it uses: ~1,600 calls for one Step's frames. Nothing here sets those variables (nor do Panel's
      or Bokeh's style sheets), so the answer is always "" and the lookup goes: 33 calls a Step.
    - Every paint of a title, colour bar or legend writes its position into its own style sheet,
      the same text each time; a style sheet whose text is set is parsed again and the page's style
      recalculated (~8 parses and 6 recalculations a live frame, the first of them forced in the
      middle of a paint). A sheet now changes only when its text does: 1.0 recalculation a frame.
    Chromium's main thread per live frame, switched on and off in turns in one training page
    (`python bench/page_turns.py --change bokeh-paints`, which puts back Bokeh's own methods, kept
    as `.bokeh`): 17.6 against 23.5 ms for both together. Both hold for the whole page: in a
    notebook, other Bokeh plots beside an explorer no longer read `--bk-*` variables.
    """

    timeout_s = param.Number(default=1.0, doc="a page that has not answered by then gets the next frame anyway")

    def __init__(self, **params):
        super().__init__(**params)
        self.shown = 0  # frames sent to the page
        self.painted = 0
        self.answers = 0  # answers that counted new frames as painted
        self.answer_seconds = 0.0  # summed over those answers: from sending their frame to the page saying it painted it
        self.on_painted: Callable[[], None] | None = None  # called when the page says it painted a frame
        self._sent_at: dict[int, float] = {}  # the frames on their way, by number: when each was sent
        self._last_asked = 0  # the last frame the page was asked to answer

    def ready(self, in_flight: int = 2) -> bool:
        """Whether the page may get another frame: fewer than `in_flight` are on their way (or the
        page stayed silent past the timeout)."""
        on_way = self.shown - self.painted
        # A frame the page was not asked to answer is known painted only from a later one's answer:
        # alone on its way, it does not hold back the next (which asks), or a page switched to one at
        # a time (its server newly over budget) would wait for the timeout.
        if on_way < in_flight or (on_way == 1 and self._last_asked < self.shown):
            return True
        return time.perf_counter() - self._sent_at.get(self.shown, 0.0) > self.timeout_s

    def sent(self, every_frame: bool = True) -> None:
        """Count one more frame, in the same message as the frame's own changes (call it last). The
        page answers it once painted if `every_frame`, else only every ANSWER_EVERY-th frame."""
        self.shown += 1
        self._sent_at[self.shown] = time.perf_counter()
        if len(self._sent_at) > SEND_TIMES_KEPT:  # a page that stopped answering (a hidden tab): forget the oldest
            del self._sent_at[min(self._sent_at)]
        # A message, not a parameter: Panel recomputes the template's design modifiers for every
        # parameter change (0.26 ms alone, 1.5 ms of the event loop per frame in a training page,
        # py-spy); queuing a message costs 0.01 ms.
        answer = every_frame or self.shown % ANSWER_EVERY == 0
        if answer:
            self._last_asked = self.shown
        self._send_msg({"shown": self.shown, "answer": answer})

    def _process_bokeh_event(self, doc, event) -> None:
        # Panel wraps every page message in its busy bookkeeping (two rounds of watchers on
        # `pn.state.busy`, ~0.8 ms of the event loop all sessions share). A frame's answer comes with
        # every frame and is no work anyone waits on, so it goes straight to `_handle_msg`.
        with set_curdoc(doc):
            self._process_event(event)

    def _handle_msg(self, data) -> None:
        if isinstance(data, dict) and isinstance(data.get("painted"), int):
            painted = min(data["painted"], self.shown)
            now = time.perf_counter()
            if painted > self.painted:
                self.answers += 1
                self.answer_seconds += now - self._sent_at.get(painted, now)
            for frame in range(self.painted + 1, painted + 1):
                self._sent_at.pop(frame, None)
            self.painted = max(self.painted, painted)
            if self.on_painted is not None:
                self.on_painted()

    _esm = """
export function render({ model }) {
  // Two costs taken out of every paint; the class's docstring says why each is safe.
  // Each replacement keeps Bokeh's own as `.bokeh`, for bench/page_turns.py to switch back to.
  const visual = window.Bokeh?.require?.('core/visuals/visual')?.VisualProperties?.prototype;
  if (visual && typeof visual._get_css_value === 'function' && !visual._get_css_value.bokeh) {
    const lookup = visual._get_css_value;
    visual._get_css_value = () => '';
    visual._get_css_value.bokeh = lookup;
  }
  const sheet = window.Bokeh?.require?.('core/dom')?.InlineStyleSheet?.prototype;
  if (sheet && typeof sheet._update === 'function' && !sheet._update.bokeh) {
    const update = sheet._update;
    sheet._update = function (css) { if (this.el.textContent !== css) update.call(this, css); };
    sheet._update.bokeh = update;
  }
  // `shown` comes last in a frame's message: after the next animation frame the views it changed
  // have been painted.
  model.on('msg:custom', (message) => {
    const shown = message.shown;
    if (typeof shown !== 'number' || message.answer === false) return;
    requestAnimationFrame(() => setTimeout(() => model.send_msg({ painted: shown }), 0));
  });
  return document.createElement('span');
}"""


class StatusLine(JSComponent):
    """One line of HTML that changes with every frame (the step, the rates, the losses).

    A Bokeh Div re-renders itself on every change of its text: a new shadow DOM with its style
    sheets, then the page's layout (BokehJS `rerender`, ~6% of Chromium's main thread while
    training, a CDP profile). This one replaces the line's inner HTML and nothing else, in a box of
    its own size (CSS `contain: strict`), so that the page around it is not laid out again each
    frame: Chromium's main thread 21.0 against 25.0 ms a live frame (switched on and off in turns in
    one training page). The text travels as a message, not a parameter, for the reason FrameClock's
    does.
    """

    def __init__(self, **params):
        super().__init__(**params)
        self.html = ""

    def show(self, html: str) -> None:
        if html != self.html:
            self.html = html
            self._send_msg({"html": html})

    def _handle_msg(self, data) -> None:
        if data == "rendered":  # a page (or a notebook cell) that drew this after the last text was sent
            self._send_msg({"html": self.html})

    _esm = """
export function render({ model }) {
  // The line is laid out on its own (size containment): its text's changes, every frame, do not lay
  // out the page around it. Its height follows its text's when that changes (a wrap, a new font
  // size), which the page reports after its layout: nothing is measured in between.
  const line = document.createElement('div');
  const text = document.createElement('div');
  line.append(text);
  line.style.contain = 'strict';
  new ResizeObserver(([entry]) => {
    line.style.height = `${entry.borderBoxSize[0].blockSize}px`;
  }).observe(text);
  model.on('msg:custom', (message) => {
    if (typeof message.html === 'string') text.innerHTML = message.html;
  });
  model.send_msg('rendered');
  return line;
}"""
