"""Hand mode's rate: how often every view follows while a hand drags a layer's handle in Chromium.

Serves the app, opens a hand-mode preset, drags its first point handle (a planar layer's line) in
circles for `--seconds`, as fast as Playwright sends pointer moves, and counts the frames the page
was sent meanwhile; then the time from letting go to the exact frame. Goal (issue 16): ≥ 10
updates/s. Ends with one JSON line:
    {"preset", "seconds", "moves_per_s", "updates_per_s", "exact_after_s"}

    python bench/hand_rate.py --preset hand-planar --seconds 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core.link import spec_to_link
from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from tests.test_browser import ARGS, CHROMIUM, TO_SCREEN, served_app, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hand-planar")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    spec = ExperimentSpec.load(preset_path(args.preset))
    with served_app() as (url, sessions), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}?spec={spec_to_link(spec)}")
        page.get_by_role("button", name="▶ Play").wait_for(timeout=60_000)
        wait_until(lambda: sessions, 30, "the session")
        explorer = sessions[-1]
        wait_until(lambda: explorer.hand.panel.visible and explorer.state.frame.kind == "exact", 60, "hand mode")
        time.sleep(2)
        layer = explorer.state.held_part()
        handle = next(h for h in explorer.hand.held()[1] if h.kind == "point")
        start = page.evaluate(TO_SCREEN, [explorer.hand.fig.id, *explorer.state.live.handles(layer)[handle.name]])
        time.sleep(1)  # (the figure scrolled into view)
        page.mouse.move(*start)
        page.mouse.down()
        shown, moves, began = explorer.state.frames_shown, 0, time.perf_counter()
        while time.perf_counter() - began < args.seconds:
            moves += 1
            page.mouse.move(start[0] + 40 * math.sin(moves / 10), start[1] - 30 * math.cos(moves / 13))
        seconds = time.perf_counter() - began
        updates = explorer.state.frames_shown - shown
        let_go = time.perf_counter()
        page.mouse.up()
        wait_until(lambda: explorer.state.frame.kind == "exact" and explorer.state.frames_shown > shown + updates, 30,
                   "the exact frame")
        exact_after = time.perf_counter() - let_go
        browser.close()
    print(json.dumps({"preset": args.preset, "seconds": round(seconds, 2), "moves_per_s": round(moves / seconds, 1),
                      "updates_per_s": round(updates / seconds, 1), "exact_after_s": round(exact_after, 2)}))


if __name__ == "__main__":
    main()
