"""Chromium's main-thread time per live frame, with a change to the page switched on and off in turns.

    python bench/page_turns.py                        # nothing switched: the method's own spread
    python bench/page_turns.py --change bokeh-paints  # FrameClock's two Bokeh patches against Bokeh's own
    python bench/page_turns.py --js my_change.js      # a file holding `(on) => { ... }`

Two runs of bench/app_rate.py one after the other have moved by ±15% on this shared machine, more
than the 5-10% that one change to the page's JavaScript makes. Here both sides run in one page, on
one server, in the same minutes: the app trains a preset in headless Chromium (1680×1300, as
app_rate.py), and the change is switched on and off from the page in turns of `--seconds`, in the
order on, off, off, on, on, off, off, on, ... so that a drift of the machine's speed falls on both
sides alike. For each turn, CDP `Performance.getMetrics` gives the renderer's main thread: its busy
time (`TaskDuration`), script, style and layout time and the count of style recalculations, each
divided by the frames that reached the page (changes of the step counter, as app_rate.py counts them).

A change is a JavaScript function of one boolean, run in the page before each turn: `true` switches
the change on, `false` back off. Ends with one JSON line: turns, seconds_per_turn, frames_on,
frames_off, main_ms_per_frame_on, main_ms_per_frame_off, ratio (on / off),
difference_standard_error_ms, style_recalcs_per_frame_on, style_recalcs_per_frame_off. With nothing
switched (`--change none`, 8 turns of 6 s) the two sides' main thread has differed by 6%, within
its standard error: a change smaller than ~10% needs more turns, and the standard error says how
far to trust it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app_rate import CHROMIUM, CHROMIUM_ARGS, OBSERVE, ROOT, free_port, open_when_up

CHANGES = {
    # Both sides the same: what the method shows when nothing changes.
    "none": "(on) => {}",
    # flowviz/ui/pickers.py's FrameClock replaces two Bokeh methods for every paint of the page (no
    # CSS-variable lookup per visual property; a style sheet rewritten only when its text changes)
    # and keeps Bokeh's own as `.bokeh`: off puts Bokeh's back.
    "bokeh-paints": """(on) => {
  const sites = [[Bokeh.require('core/visuals/visual').VisualProperties.prototype, '_get_css_value'],
                 [Bokeh.require('core/dom').InlineStyleSheet.prototype, '_update']];
  for (const [proto, name] of sites) {
    const ours = proto[name].bokeh ? proto[name] : proto[name].ours;
    if (!ours || !ours.bokeh) throw new Error('FrameClock has not replaced ' + name);
    const chosen = on ? ours : ours.bokeh;
    chosen.ours = ours;
    proto[name] = chosen;
  }
}""",
}

METRICS = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")


def order(turns: int) -> list[bool]:
    """On, off, off, on, on, off, ...: each side's turns spread evenly over the run.

    Example:
        >>> order(6)
        [True, False, False, True, True, False]
    """
    return [(turn % 2 == 0) == ((turn // 2) % 2 == 0) for turn in range(turns)]


def run(change: str, preset: Path, turns: int, seconds: float) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from flowviz.core.link import LINK_PARAMETER, spec_to_link
    from flowviz.core.spec import ExperimentSpec

    port = free_port()
    probe = Path(tempfile.mkdtemp(prefix="fv-probe-")) / "probe.json"  # (app_probe.py needs one; unread here)
    server = subprocess.Popen([sys.executable, "-m", "panel", "serve", "bench/app_probe.py", "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "FV_PROBE": str(probe)})
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1680, "height": 1300})
            open_when_up(page, f"http://localhost:{port}/app_probe?{LINK_PARAMETER}={spec_to_link(ExperimentSpec.load(preset))}")
            play = page.get_by_role("button", name="▶ Play")
            play.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            page.evaluate(OBSERVE)
            play.click()
            # Not counted: the first seconds of training, which the first turn alone would see (after
            # a 3-s warm-up, two runs with nothing switched put the side that went first 7-10% lower).
            page.wait_for_timeout(3000 + 2 * seconds * 1000)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def sample() -> tuple[dict, int]:
                metrics = {entry["name"]: entry["value"] for entry in cdp.send("Performance.getMetrics")["metrics"]}
                return metrics, page.evaluate("() => window.fvChanges.length")

            for on in order(turns):
                page.evaluate(change, on)
                page.wait_for_timeout(500)  # (the frame painting when it switched is not counted)
                (before, frames_before), started = sample(), time.perf_counter()
                page.wait_for_timeout(seconds * 1000)
                (after, frames_after), span = sample(), time.perf_counter() - started
                frames = max(frames_after - frames_before, 1)
                row = {"on": on, "frames": frames, "frames_per_s": frames / span,
                       "style_recalcs_per_frame": (after["RecalcStyleCount"] - before["RecalcStyleCount"]) / frames}
                row.update({f"{name}_ms_per_frame": 1000 * (after[name] - before[name]) / frames for name in METRICS})
                rows.append(row)
                print(f"turn {len(rows)}: {'on ' if on else 'off'} {row['frames_per_s']:5.1f} frames/s, main thread "
                      f"{row['TaskDuration_ms_per_frame']:5.1f} ms a frame, {row['style_recalcs_per_frame']:.2f} "
                      "style recalculations a frame", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--change", choices=sorted(CHANGES), default="none")
    which.add_argument("--js", type=Path, help="a file holding a JavaScript function `(on) => { ... }`")
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--turns", type=int, default=8, help="a multiple of 4 balances the order")
    parser.add_argument("--seconds", type=float, default=6.0, help="per turn")
    args = parser.parse_args()
    change = args.js.read_text() if args.js else CHANGES[args.change]
    rows = run(change, ROOT / "presets" / f"{args.preset}.json", args.turns, args.seconds)

    def mean(key: str, on: bool) -> float:
        return statistics.fmean(row[key] for row in rows if row["on"] == on)

    print(f"\nmeans over {args.turns // 2} turns a side ({args.js or args.change}, {args.preset})\n")
    print("| per frame | on | off |")
    print("|---|---|---|")
    for key, label in (("TaskDuration_ms_per_frame", "main thread, ms"), ("ScriptDuration_ms_per_frame", "script, ms"),
                       ("RecalcStyleDuration_ms_per_frame", "style, ms"), ("LayoutDuration_ms_per_frame", "layout, ms"),
                       ("style_recalcs_per_frame", "style recalculations"), ("frames_per_s", "frames/s (a rate, not per frame)")):
        print(f"| {label} | {mean(key, True):.2f} | {mean(key, False):.2f} |")
    on_ms, off_ms = mean("TaskDuration_ms_per_frame", True), mean("TaskDuration_ms_per_frame", False)
    # The standard error of the difference of the two means, from the turns' spread on each side:
    # a difference within about two of these is what two sides without any change also show.
    error = math.sqrt(sum(statistics.variance(row["TaskDuration_ms_per_frame"] for row in rows if row["on"] == on)
                          / (len(rows) // 2) for on in (True, False)))
    print(f"\nmain thread on − off: {on_ms - off_ms:+.2f} ms a frame, standard error {error:.2f} ms")
    print(json.dumps({"turns": args.turns, "seconds_per_turn": args.seconds,
                      "frames_on": sum(row["frames"] for row in rows if row["on"]),
                      "frames_off": sum(row["frames"] for row in rows if not row["on"]),
                      "main_ms_per_frame_on": round(on_ms, 2), "main_ms_per_frame_off": round(off_ms, 2),
                      "ratio": round(on_ms / off_ms, 3), "difference_standard_error_ms": round(error, 2),
                      "style_recalcs_per_frame_on": round(mean("style_recalcs_per_frame", True), 2),
                      "style_recalcs_per_frame_off": round(mean("style_recalcs_per_frame", False), 2)}))


if __name__ == "__main__":
    main()
