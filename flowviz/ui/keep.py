"""Nothing lost on a reload: the page keeps its latest training state in the browser.

While training, every KEEP_EVERY seconds (and at each pause) the session's whole training state
(core.checkpoint.session_bytes: weights, Adam's moments, the batch stream, the step count, every loss
and evaluation; a few hundred KB) goes to the page, which files it in the browser's IndexedDB under
the experiment's key. A reload, a new tab on the same link, or a page opened after the server
process died finds it there and offers **Restore**: the step count, the loss curve and the densities
come back bit for bit, and training goes on as if nothing had happened. At most KEPT_EXPERIMENTS
experiments are kept per browser, the oldest dropped first. The bytes come back only through
`torch.load(weights_only=True)` and are checked against the page's experiment before anything changes.

When the connection to the server is lost, the page says so at once and how to continue.

Example:
    >>> from flowviz.core.spec import ExperimentSpec
    >>> state = ExperimentState(ExperimentSpec.from_dict({"layers": [{"type": "planar"}], "view": {"resolution": 16}}))
    >>> keeper = KeepView(state)
    >>> keeper.offered({"key": keeper.store.key, "steps": 4210, "age_s": 130})
    >>> keeper.offer.visible, keeper.offer_text.object
    (True, '**This experiment was trained in this browser before:** 4,210 steps, 2 minutes ago.')
    >>> state.close()
"""

from __future__ import annotations

import base64
import time

import panel as pn
import param
from panel.custom import JSComponent

from flowviz.core.checkpoint import MAX_SESSION_BYTES, experiment_key
from flowviz.ui.state import ExperimentState
from flowviz.ui.views import StateView

KEEP_EVERY = 5.0  # seconds between kept states while training: a dead server loses at most this much
KEPT_EXPERIMENTS = 8  # experiments one browser keeps; the oldest goes first


def ago(seconds: float) -> str:
    """How long ago, in the words a person would use.

    Example:
        >>> ago(12), ago(75), ago(130), ago(7200), ago(200000)
        ('just now', '1 minute ago', '2 minutes ago', '2 hours ago', '2 days ago')
    """
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


class BrowserStore(JSComponent):
    """The page's side: files kept states in IndexedDB, offers the one for `key` when the page opens,
    hands it back when asked, and says when the connection to the server is lost."""

    key = param.String(default="", doc="the experiment this page shows (core.checkpoint.experiment_key)")
    kept_steps = param.Integer(default=-1, doc="step count of this page's last state the browser has stored")
    lost_text = param.String(default="", doc="what the page says when the connection to the server is lost")

    def __init__(self, **params):
        super().__init__(**params)
        self.on_offer = self.on_state = self.on_failure = None  # callbacks: the KeepView's

    def keep(self, content: bytes, steps: int, title: str) -> None:
        self._send_msg({"keep": {"key": self.key, "steps": steps, "title": title,
                                 "data": base64.b64encode(content).decode("ascii")}})

    def fetch(self, key: str) -> None:
        self._send_msg({"fetch": key})

    def _handle_msg(self, data) -> None:
        if not isinstance(data, dict):
            return
        if isinstance(data.get("kept"), dict) and data["kept"].get("key") == self.key:
            steps = data["kept"].get("steps")
            if isinstance(steps, int):
                self.kept_steps = steps
        elif isinstance(data.get("offer"), dict) and self.on_offer is not None:
            self.on_offer(data["offer"])
        elif isinstance(data.get("state"), dict) and self.on_state is not None:
            self.on_state(data["state"])
        elif isinstance(data.get("failed"), str) and self.on_failure is not None:
            self.on_failure(data["failed"][:300])

    _esm = """
const DB = 'flowviz', META = 'kept', DATA = 'states';
const MAX_KEPT = MAX_KEPT_HERE;
window.flowvizPage ??= Math.random().toString(36).slice(2);  // this page load, across re-renders

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(META, { keyPath: 'key' });
      request.result.createObjectStore(DATA);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// Run `work(meta, data)` in one transaction; resolves with what work returns (a request's result).
async function transaction(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction([META, DATA], mode);
    const out = work(tx.objectStore(META), tx.objectStore(DATA));
    tx.oncomplete = () => { db.close(); resolve(out && 'result' in out ? out.result : out); };
    tx.onerror = tx.onabort = () => { db.close(); reject(tx.error); };
  });
}

async function keep(record) {
  const meta = { key: record.key, steps: record.steps, title: record.title, saved_at: Date.now(), page: window.flowvizPage };
  await transaction('readwrite', (metas, states) => {
    metas.put(meta);
    states.put(record.data, record.key);
    const all = metas.getAll();
    all.onsuccess = () => {  // the oldest go, past MAX_KEPT
      const others = all.result.filter((m) => m.key !== meta.key).sort((a, b) => b.saved_at - a.saved_at);
      for (const old of others.slice(MAX_KEPT - 1)) { metas.delete(old.key); states.delete(old.key); }
    };
  });
}

export function render({ model, view }) {
  const failed = (error) => model.send_msg({ failed: String(error && error.message || error) });
  if (!window.indexedDB) { failed('this browser has no IndexedDB'); }
  else {
    transaction('readonly', (metas) => metas.get(model.key)).then((meta) => {
      if (meta && meta.page !== window.flowvizPage) {
        model.send_msg({ offer: { key: meta.key, steps: meta.steps, title: meta.title,
                                  age_s: Math.max(0, (Date.now() - meta.saved_at) / 1000) } });
      }
    }).catch(failed);
  }
  // The step of the latest state this page stored, as the browser knows it: a state stored just as the
  // server died never gets its 'kept' back to the server (and model.kept_steps), yet a reload offers it.
  let stored = { key: null, steps: -1 };
  model.on('msg:custom', (message) => {
    if (message.keep) {
      keep(message.keep).then(() => {
        stored = { key: message.keep.key, steps: message.keep.steps };
        if (banner.isConnected) sayLost();
        model.send_msg({ kept: stored });
      }).catch(failed);
    } else if (message.fetch !== undefined) {
      transaction('readonly', (metas, states) => states.get(message.fetch)).then((data) => {
        model.send_msg({ state: { key: message.fetch, data: data ?? null } });
      }).catch(failed);
    }
  });
  // The server is gone (a dead process, a dropped network): say so at once, and how to go on.
  // It lives in the page's body, outside every shadow root, so it carries its own style.
  const banner = document.createElement('div');
  banner.className = 'fv-lost'; banner.setAttribute('role', 'alert');
  banner.style.cssText = 'position:fixed;top:0;left:0;right:0;z-index:10000;display:flex;gap:16px;align-items:center;'
    + 'justify-content:center;flex-wrap:wrap;padding:12px 20px;background:#8a1c1c;color:white;'
    + 'font:600 17px system-ui,sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.3)';
  const reload = document.createElement('button');
  reload.style.cssText = 'font:600 16px system-ui,sans-serif;padding:6px 14px;border:0;border-radius:6px;'
    + 'background:white;color:#8a1c1c;cursor:pointer';
  reload.textContent = 'Reload the page'; reload.addEventListener('click', () => window.location.reload());
  const text = document.createElement('span');
  banner.append(text, reload);
  const doc = view.model.document;
  function sayLost() {
    // (kept_steps, the server's count, only for a page drawn again since it stored: a notebook cell)
    const steps = stored.key === model.key ? stored.steps : model.kept_steps;
    text.textContent = model.lost_text.replace('{steps}', steps > 0 ? steps.toLocaleString('en-US') : '0');
  }
  doc?.on_event('connection_lost', () => {
    sayLost();
    if (!banner.isConnected) document.body.append(banner);
  });
  // (Bokeh does not reconnect by itself here: the page is gone until it reloads, so the banner stays.)
  return document.createElement('span');
}""".replace("MAX_KEPT_HERE", str(KEPT_EXPERIMENTS))



class KeepView(StateView):
    """Keeps the session's training state in the browser, and offers it back: "trained 4,210 steps,
    2 minutes ago" with **Restore** and **Not now**."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.store = BrowserStore(margin=0, lost_text=(
            "The connection to the flowviz server was lost. This browser kept your training up to step {steps}: "
            "reload the page and press Restore to go on."))
        self.store.on_offer, self.store.on_state, self.store.on_failure = self.offered, self._received, self._failed
        self.offer_text = pn.pane.Markdown("", margin=(0, 10), styles={"font-size": "15px"})
        self.restore_button = pn.widgets.Button(label="Restore", color="primary", width=110)
        self.restore_button.on_click(lambda _event: self.restore())
        self.dismiss_button = pn.widgets.Button(label="Not now", width=100)
        self.dismiss_button.on_click(lambda _event: self._hide())
        # A flex box that wraps: on a tablet the buttons go under the text instead of off the edge.
        self.offer = pn.FlexBox(self.offer_text, self.restore_button, self.dismiss_button, visible=False,
                                align_items="center", flex_wrap="wrap", sizing_mode="stretch_width", margin=(4, 5),
                                styles={"background": "#eaf1ff", "border-left": "4px solid #2a6fdb", "padding": "4px"})
        self._offered: dict | None = None
        self._kept_at = -float("inf")
        self._kept_step = -1
        self._pause_owed = False  # paused since the last keep: the next tick keeps, whatever the interval
        self._failure_said = False
        self._follow_spec()

    # -- keeping ---------------------------------------------------------------------------------------
    @param.depends("state.spec", watch=True)
    def _follow_spec(self) -> None:
        key = experiment_key(self.state.spec)
        if key != self.store.key:
            self.store.param.update(key=key, kept_steps=-1)
            self._kept_step = -1
            if self._offered is not None and self._offered.get("key") != key:
                self._hide()  # an offer for the experiment this page no longer shows

    @param.depends("state.playing", watch=True)
    def _keep_at_pause(self) -> None:
        if self.state.playing:
            self._hide()  # training on: whatever was offered or said here is past
        else:
            # On the next tick, not here: the click's own effect goes to the page first, without the
            # state's write (8 ms, more under load) and its 0.6 MB message ahead of it.
            self._pause_owed = True

    def keep(self, force: bool = False) -> bool:
        """Send the training state to the page's storage if it trained since the last one and
        KEEP_EVERY seconds have passed (or `force`, or it paused since); True if it was sent.

        Only a pause's keep waits for the model (at most a step); otherwise, while a step or a frame's copy
        holds it, the next tick tries again: this runs on the event loop all sessions share, which
        must never wait for one session's training (under load a step holds the model for longer)."""
        now = time.monotonic()
        step = self.state.live.step
        force, self._pause_owed = force or self._pause_owed, False
        if step == 0 or step == self._kept_step or (not force and now - self._kept_at < KEEP_EVERY):
            return False
        kept = self.state.live.kept_bytes(wait=force)
        if kept is None:
            return False
        content, step = kept
        self._kept_at, self._kept_step = now, step
        if len(content) > MAX_SESSION_BYTES:
            self._failed(f"this model's training state is {len(content) / 2**20:.0f} MiB, too large to keep")
            return False
        self.store.keep(content, step, self.state.spec.title)
        if self._offered is not None and self._offered.get("key") == self.store.key:
            self._hide()  # this page's own state has replaced the one on offer
        return True

    # -- restoring -------------------------------------------------------------------------------------
    def offered(self, offer: dict) -> None:
        """The page found a state of this experiment that another page kept."""
        steps, age = offer.get("steps"), offer.get("age_s")
        if offer.get("key") != self.store.key or not isinstance(steps, int) or not isinstance(age, (int, float)):
            return
        self._offered = offer
        self.restore_button.visible = self.dismiss_button.visible = True
        self.offer_text.object = (f"**This experiment was trained in this browser before:** {steps:,} steps, "
                                  f"{ago(age)}.")
        self.offer.visible = True

    def restore(self) -> None:
        """Ask the page for the offered state; `_received` restores it."""
        if self._offered is not None:
            self.restore_button.disabled = True
            self.store.fetch(self._offered["key"])

    def _received(self, kept: dict) -> None:
        self.restore_button.disabled = False
        data = kept.get("data")
        if kept.get("key") != self.store.key or not isinstance(data, str):
            self.state.say("The kept training is no longer in this browser's storage. Nothing changed.")
            self._hide()
            return
        try:
            content = base64.b64decode(data, validate=True)
        except ValueError:
            content = b""  # read_session says why
        if self.state.restore(content):
            self._kept_step = self.state.live.step  # nothing new to keep
            self._offered = None
            self.offer_text.object = (f"**Restored:** step {self.state.live.step:,}, as it was. "
                                      "▶ Play trains on from there.")
            self.restore_button.visible = self.dismiss_button.visible = False
        else:
            self._hide()

    def _failed(self, reason: str) -> None:
        if not self._failure_said:  # once a page: it stays true
            self._failure_said = True
            self.state.say(f"This browser cannot keep your training for a reload ({reason}). Download the "
                           "trained model (Experiment → Export) to keep it.")

    def _hide(self) -> None:
        self._offered = None
        self.offer.visible = False

    def __panel__(self):
        return pn.Column(self.store, self.offer, sizing_mode="stretch_width", margin=0)
