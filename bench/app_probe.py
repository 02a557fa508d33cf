"""The app as `panel serve flowviz/app.py` serves it, plus a probe for bench/app_rate.py.

Every 0.5 s the probe writes, to the file named by FV_PROBE, what the server side did so far: the
event loop's CPU seconds (the main thread's `time.thread_time`, read from a callback on that loop),
the frames this page was sent, the frames rendered and the seconds spent rendering them, and the
grid sides of the last frame (the model view's and the strips').

    FV_PROBE=/tmp/probe.json panel serve bench/app_probe.py
"""

import json
import os
import sys
import time
from pathlib import Path

import panel as pn
from panel.io.callbacks import PeriodicCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowviz.app import serve_page

template = serve_page()
explorer = template.explorer


def report() -> None:
    frame, live = explorer.state.frame, explorer.state.live
    data = {"event_loop_s": time.thread_time(), "frames_shown": explorer.state.frames_shown,
            "frames_rendered": live.frames_rendered, "render_s": live.render_seconds, "step": live.step, "answer_s": explorer.clock.answer_seconds,
            "answers": explorer.clock.answers,
            "kind": frame.kind if frame else "", "model_px": int(frame.model.shape[0]) if frame else 0,
            "strip_px": int(frame.views.log_q.shape[1]) if frame else 0, "unseen": explorer.state.unseen}
    probe = Path(os.environ["FV_PROBE"])
    part = probe.with_suffix(".part")
    part.write_text(json.dumps(data))
    part.replace(probe)  # whole or not at all: app_rate once read a half-written file


# In the background and unlogged, as the app's own tick: Panel's busy bookkeeping around each call
# (watchers of `pn.state.busy`) was in ~8% of py-spy's samples of the event loop this probe measures
# (app_rate's event-loop figure, alternated with and without it, moved less than its noise).
reporter = PeriodicCallback(callback=report, period=500, background=True, log=False)
reporter.start()
pn.state.on_session_destroyed(lambda _context: reporter.stop())
