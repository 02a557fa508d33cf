"""Remake the README's screenshots of the explorer: serve the app, drive it in headless Chromium, crop.

    python assets/make_screenshots.py   # writes assets/explorer.png, ledger.png, draw.png, projector.png,
                                        # cnf-samples.png, cnf-ledger.png, picture-smiley.png,
                                        # picture-upload.png, hand-planar.png and the page at three sizes,
                                        # idle and training: assets/page-*.png
    python assets/make_screenshots.py continuous   # only the continuous flow's two
    python assets/make_screenshots.py picture      # only the picture target's two
    python assets/make_screenshots.py hand         # only hand mode's
    python assets/make_screenshots.py keep         # only the kept training's: keep-offer.png, keep-lost.png

Needs the test extras (Playwright) and Debian's chromium, like the browser tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core.link import spec_to_link
from flowviz.core.spec import ExperimentSpec
from tests.test_browser import ARGS, CHROMIUM, TO_SCREEN, served_app, wait_until

OUT = ROOT / "assets"

def main() -> None:
    from playwright.sync_api import sync_playwright

    with served_app() as (url, sessions), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        if sys.argv[1:] in ([], ["continuous"]):
            continuous(page, url, sessions)
        if sys.argv[1:] in ([], ["picture"]):
            picture(page, url, sessions)
        if sys.argv[1:] in ([], ["hand"]):
            hand(page, url, sessions)
        if sys.argv[1:] in ([], ["keep"]):
            keep(browser, url, sessions)
        if sys.argv[1:]:
            return
        overview(page, url, sessions)
        page.close()
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        ledger_and_drawing(page, url, sessions)
        page.close()
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        projector(page, url, sessions)
        page.close()
        for name, viewport, touch in SCREENS:
            context = browser.new_context(viewport=viewport, has_touch=touch)
            sizes(context.new_page(), url, sessions, name)
            context.close()
        browser.close()


SCREENS = [("1600x1000", {"width": 1600, "height": 1000}, False), ("1280x800", {"width": 1280, "height": 800}, False),
           ("tablet", {"width": 820, "height": 1180}, True)]


def sizes(page, url: str, sessions: list, name: str) -> None:
    """The first screen of the default experiment, idle and then while it trains."""
    explorer = _open(page, url, sessions)
    page.screenshot(path=OUT / f"page-{name}-idle.png")
    page.get_by_role("button", name="▶ Play").click()
    wait_until(lambda: explorer.state.live.step >= 300, 120, "some training")
    page.screenshot(path=OUT / f"page-{name}-training.png")
    page.get_by_role("button", name="❚❚ Pause").click()

def _open(page, url: str, sessions: list):
    count = len(sessions)
    page.goto(url)
    page.get_by_role("button", name="▶ Play").wait_for(timeout=60_000)
    wait_until(lambda: len(sessions) > count, 30, "the session")
    time.sleep(2)
    return sessions[-1]

def _steps(page, explorer, n: int) -> None:
    for _ in range(n):
        before = explorer.state.live.step
        page.get_by_role("button", name="Step", exact=True).click()
        wait_until(lambda before=before: explorer.state.live.step > before, 20, "the step")
    time.sleep(1)

def _box_of(page, text: str, below: int) -> dict:
    box = page.get_by_text(text).first.bounding_box()
    return {"x": box["x"] - 20, "y": box["y"] - 14, "width": 1600 - box["x"], "height": below}

def overview(page, url: str, sessions: list) -> None:
    explorer = _open(page, url, sessions)  # the default experiment: RealNVP on two moons
    page.get_by_role("button", name="▶ Play").click()
    wait_until(lambda: explorer.state.live.step >= 600, 180, "some training")
    page.get_by_role("button", name="❚❚ Pause").click()
    time.sleep(3)
    page.screenshot(path=OUT / "explorer.png")

def _trained(page, url: str, sessions: list, spec: ExperimentSpec, steps: int, timeout: float):
    """Open `spec`, play until `steps` steps, pause, and wait for the exact frame: the explorer."""
    explorer = _open(page, url + "?spec=" + spec_to_link(spec), sessions)
    page.get_by_role("button", name="▶ Play").click()
    wait_until(lambda: explorer.state.live.step >= steps, timeout, "some training")
    page.get_by_role("button", name="❚❚ Pause").click()
    wait_until(lambda: explorer.state.frame.kind == "exact", 60, "the exact frame")
    time.sleep(2)
    return explorer

def _ledger(page, explorer, depth: int, point: tuple[float, float], name: str, height: int) -> None:
    """Click `point` in the density strip's panel `depth` and photograph the ledger that follows it."""
    dx, dy = explorer.strips.density.layout.offset(depth)
    page.mouse.click(*page.evaluate(TO_SCREEN, [explorer.strips.density.figure.id, point[0] + dx, point[1] + dy]))
    page.get_by_text("they agree").wait_for(timeout=20_000)
    time.sleep(1.5)
    title = "Follow a point: the change-of-variables ledger"
    page.get_by_text(title).evaluate("e => e.scrollIntoView({block: 'start'})")
    time.sleep(0.5)
    page.screenshot(path=OUT / name, clip=_box_of(page, title, height))

def ledger_and_drawing(page, url: str, sessions: list) -> None:
    spec = ExperimentSpec.load(ROOT / "presets" / "spline-8gaussians.json").replace(view={"resolution": 64})
    explorer = _trained(page, url, sessions, spec, 400, 120)
    _ledger(page, explorer, 2, (1.2, 0.9), "ledger.png", 720)

    page.get_by_role("button", name="✎ Draw").click()
    wait_until(lambda: explorer.state.drawing, 10, "draw mode")
    time.sleep(1)  # the figure stops panning once the server's change has reached the page
    target = explorer.overview.target_model.target_fig
    for row, (x0, y0) in enumerate([(-2.5, 1.5), (-2.5, -1.5)]):
        start = page.evaluate(TO_SCREEN, [target.id, x0, y0])
        page.mouse.move(*start)
        page.mouse.down()
        for i in range(1, 40):
            page.mouse.move(start[0] + 4 * i, start[1] + (8 if i % 10 < 5 else -8) * (row * 2 - 1) * 0.5, steps=2)
        page.mouse.up()
    wait_until(lambda: len(explorer.state.drawn) > 200, 20, "the drawing")
    time.sleep(1)
    box = page.get_by_text("Draw", exact=False).first.bounding_box()
    page.screenshot(path=OUT / "draw.png", clip={"x": box["x"] - 20, "y": box["y"] - 330, "width": 820, "height": 420})

def continuous(page, url: str, sessions: list) -> None:
    """A continuous flow by flow matching, in time slices: its samples strip with the velocity
    arrows, and the ledger through its solver steps."""
    explorer = _trained(page, url, sessions, ExperimentSpec.load(ROOT / "presets" / "cnf-fm-moons.json"), 800, 120)
    strip = explorer.strips.samples.figure
    page.evaluate(TO_SCREEN, [strip.id, 0, 0])  # scrolls the strip into view
    time.sleep(1)
    left, top = page.evaluate(TO_SCREEN, [strip.id, explorer.state.spec.view.xmin, explorer.state.spec.view.ymax])
    page.screenshot(path=OUT / "cnf-samples.png",
                    clip={"x": left - 12, "y": top - 95, "width": strip.width + 24, "height": strip.height + 30})
    _ledger(page, explorer, 4, (0.5, 0.25), "cnf-ledger.png", 620)

def picture(page, url: str, sessions: list) -> None:
    """The face preset after some training; then the logo uploaded as a file, in the Target card."""
    spec = ExperimentSpec.load(ROOT / "presets" / "spline-smiley.json").replace(view={"resolution": 96})
    explorer = _trained(page, url, sessions, spec, 1500, 180)
    top = page.get_by_role("button", name="▶ Play").bounding_box()
    bottom = page.get_by_text("Under each panel:").bounding_box()
    page.screenshot(path=OUT / "picture-smiley.png", clip={"x": top["x"] - 12, "y": top["y"] - 10, "width": 1230,
                                                           "height": bottom["y"] + 50 - top["y"]})
    page.get_by_label("Upload points or a picture").set_input_files(str(ROOT / "flowviz" / "core" / "targets" / "pictures" / "logo.png"))
    wait_until(lambda: explorer.state.spec.target.image is not None, 20, "the uploaded picture")
    time.sleep(2)
    page.get_by_text("Training on your picture").evaluate("e => e.scrollIntoView({block: 'center'})")
    time.sleep(0.5)
    box = page.get_by_text("Training on your picture").bounding_box()
    page.screenshot(path=OUT / "picture-upload.png", clip={"x": 0, "y": box["y"] - 420, "width": 1600, "height": 520})

def _drag(page, fig, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag on a figure from one point of the plane to another, in small steps, as a hand would."""
    a, b = page.evaluate(TO_SCREEN, [fig.id, *start]), page.evaluate(TO_SCREEN, [fig.id, *end])
    page.mouse.move(*a)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(a[0] + (b[0] - a[0]) * i / 20, a[1] + (b[1] - a[1]) * i / 20)
    page.mouse.up()
    time.sleep(1)


def hand(page, url: str, sessions: list) -> None:
    """The planar lesson in hand mode: w turned to point along x, then u dragged out along it, so the
    Gaussian splits into two lumps on the two arcs of U1."""
    spec = ExperimentSpec.load(ROOT / "presets" / "hand-planar.json")
    explorer = _open(page, url + "?spec=" + spec_to_link(spec), sessions)
    wait_until(lambda: explorer.hand.panel.visible and explorer.state.frame.kind == "exact", 60, "hand mode")
    fig, layer = explorer.hand.fig, explorer.state.held_part()
    page.evaluate(TO_SCREEN, [fig.id, 0, 0])  # scrolls it into view
    time.sleep(1)
    values = explorer.state.live.handles(layer)
    _drag(page, fig, tuple(a + b for a, b in zip(values["anchor"], values["w"])), (2.4, 0.0))
    values = explorer.state.live.handles(layer)
    _drag(page, fig, tuple(a + b for a, b in zip(values["anchor"], values["u"])), (1.8, 0.0))
    wait_until(lambda: explorer.state.frame.kind == "exact", 30, "the exact frame")
    time.sleep(2)
    box = page.get_by_text("Layer 1 by hand: Planar flow").bounding_box()
    page.screenshot(path=OUT / "hand-planar.png", clip={"x": box["x"] - 300, "y": box["y"] - 30, "width": 1240,
                                                        "height": 700})

# Keeps the page's websockets within reach, so that a screenshot can show the page losing its server.
CAPTURE_SOCKETS = """(() => { const Native = window.WebSocket; window.flowvizSockets = [];
  window.WebSocket = class extends Native { constructor(...a) { super(...a); window.flowvizSockets.push(this); } }; })()"""


def keep(browser, url: str, sessions: list) -> None:
    """The offer to restore after a reload, and the bar a page shows when its server goes away."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.add_init_script(CAPTURE_SOCKETS)
    explorer = _open(page, url, sessions)
    page.get_by_role("button", name="▶ Play").click()
    wait_until(lambda: explorer.state.live.step >= 300, 120, "some training")
    page.get_by_role("button", name="❚❚ Pause").click()
    wait_until(lambda: explorer.keeper.store.kept_steps == explorer.state.live.step, 30, "the kept state")
    count = len(sessions)
    page.reload()
    wait_until(lambda: len(sessions) > count, 60, "the reloaded page")
    page.get_by_text("trained in this browser before").wait_for(timeout=30_000)
    time.sleep(2)
    page.screenshot(path=OUT / "keep-offer.png", clip={"x": 380, "y": 60, "width": 1220, "height": 440})
    page.get_by_role("button", name="Restore").click()
    page.get_by_role("button", name="▶ Play").click()
    wait_until(lambda: sessions[-1].state.live.step > explorer.state.live.step + 200, 120, "training on")
    page.evaluate("window.flowvizSockets.forEach((socket) => socket.close())")  # as when the server dies
    page.get_by_role("alert").filter(has_text="connection").wait_for(timeout=10_000)
    time.sleep(1)
    page.screenshot(path=OUT / "keep-lost.png", clip={"x": 0, "y": 0, "width": 1600, "height": 500})
    page.close()


def projector(page, url: str, sessions: list) -> None:
    spec = ExperimentSpec.load(ROOT / "presets" / "realnvp-moons.json").replace(
        presentation={"projector": True, "hidden": ["experiment", "target", "base", "training", "layers"]})
    explorer = _open(page, url + "?spec=" + spec_to_link(spec), sessions)
    _steps(page, explorer, 30)
    page.screenshot(path=OUT / "projector.png")

if __name__ == "__main__":
    main()
