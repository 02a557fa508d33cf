"""Frame rate and training speed of the explorer in a real browser, against headless training.

Starts the app (`bench/app_probe.py`: flowviz/app.py plus a probe of the server side), opens it in
headless Chromium (Playwright, system chromium), loads a preset, presses Play and, after a warm-up,
counts for `--seconds`:
- frames/s: status updates that reached the page (each pushed frame rewrites the step counter);
- bytes/frame: websocket bytes the browser received, per frame;
- in-app steps/s: the step counter's rise over the window;
- from the probe: the server's event-loop CPU time per frame sent, the time to compute one frame,
  and the grid sides of the model view and the strips while training;
- the cores the server process and Chromium's processes kept busy over the window (Linux /proc).
Headless steps/s is `Trainer.step` on the same preset in a fresh process, measured just before and
just after the browser run (the mean of the two is the reference). The last line is JSON:
frames_per_s, steps_per_s, headless_steps_per_s, kib_per_frame, live_resolution, strip_resolution,
event_loop_ms_per_frame, render_ms.

    python bench/app_rate.py --preset realnvp-moons --seconds 20
    python bench/app_rate.py --no-browser   # the server side alone: LiveSession, no page
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

HEADLESS = """
import json, sys, time
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer
trainer = Trainer(ExperimentSpec.load(sys.argv[1]))
for _ in range(30): trainer.step()
start = time.perf_counter(); n = 0
while time.perf_counter() - start < float(sys.argv[2]):
    trainer.step(); n += 1
print(json.dumps(n / (time.perf_counter() - start)))
"""

# Finds the step counter inside Panel's shadow roots and records every change with its time.
OBSERVE = """
() => {
  function find(root) {
    const hit = root.querySelector && root.querySelector('#fv-step');
    if (hit) return hit;
    for (const node of root.querySelectorAll ? root.querySelectorAll('*') : []) {
      if (node.shadowRoot) { const inner = find(node.shadowRoot); if (inner) return inner; }
    }
    return null;
  }
  window.fvChanges = [];
  const watch = () => {
    const span = find(document);
    if (!span) { setTimeout(watch, 50); return; }
    // The shadow root that holds it: a Bokeh Div renders a new element for each text.
    const host = span.getRootNode();
    new MutationObserver(() => {
      const now = find(document);
      if (now) window.fvChanges.push([performance.now(), Number(now.textContent.replace(/,/g, ''))]);
    }).observe(host, { subtree: true, childList: true, characterData: true });
  };
  watch();
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_when_up(page, url: str) -> None:
    """Load `url`, retrying while the just-started server is not listening yet."""
    for _ in range(100):
        try:
            page.goto(url)
            return
        except Exception:  # noqa: BLE001 (any failure means "not up yet"; the last try below raises it)
            time.sleep(0.3)
    page.goto(url)  # one last time, letting its error through


def headless_rate(preset: Path, seconds: float) -> float:
    out = subprocess.run([sys.executable, "-c", HEADLESS, str(preset), str(seconds)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout)


def cpu_seconds_of_descendants() -> dict[int, tuple[float, str]]:
    """CPU seconds (user + system) so far of every process started under this one, by pid, with its
    command line (Linux /proc; empty elsewhere): the server and Chromium's processes."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), command)
    mine, found = {os.getpid()}, True
    while found:  # (children first appear after their parents in no particular order)
        found = False
        for pid, (parent, _, _) in table.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                found = True
    return {pid: (cpu, command) for pid, (_, cpu, command) in table.items() if pid in mine and pid != os.getpid()}


def cores_busy(before: dict, after: dict, seconds: float, server_pid: int) -> dict[str, float]:
    """Cores the server and Chromium kept busy between two `cpu_seconds_of_descendants`."""
    busy = {"server": 0.0, "chromium": 0.0}
    for pid, (cpu, command) in after.items():
        key = "server" if pid == server_pid else "chromium" if "chrom" in command else None
        if key:
            busy[key] += (cpu - before.get(pid, (0.0, ""))[0]) / seconds
    return busy


def browser_run(preset: Path, seconds: float, warmup: float) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    probe = Path(tempfile.mkdtemp(prefix="fv-probe-")) / "probe.json"
    server = subprocess.Popen([sys.executable, "-m", "panel", "serve", "bench/app_probe.py", "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "FV_PROBE": str(probe)})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1680, "height": 1300})
            received = [0]

            def on_socket(ws):
                ws.on("framereceived", lambda payload: received.__setitem__(0, received[0] + len(payload)))

            page.on("websocket", on_socket)
            from flowviz.core.link import LINK_PARAMETER, spec_to_link
            from flowviz.core.spec import ExperimentSpec

            # The preset through its link, as a shared link opens it (picking it from the list was flaky).
            open_when_up(page, f"http://localhost:{port}/app_probe?{LINK_PARAMETER}={spec_to_link(ExperimentSpec.load(preset))}")
            page.get_by_role("button", name="▶ Play").wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            page.evaluate(OBSERVE)
            page.get_by_role("button", name="▶ Play").click()
            page.wait_for_timeout(warmup * 1000)
            start_bytes, start_changes = received[0], len(page.evaluate("window.fvChanges"))
            first, cpu_first, clock_first = json.loads(probe.read_text()), cpu_seconds_of_descendants(), time.perf_counter()
            page.wait_for_timeout(seconds * 1000)
            changes = page.evaluate("window.fvChanges")[start_changes:]
            total_bytes = received[0] - start_bytes
            last = json.loads(probe.read_text())
            cores = cores_busy(cpu_first, cpu_seconds_of_descendants(), time.perf_counter() - clock_first, server.pid)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    span = (changes[-1][0] - changes[0][0]) / 1000
    frames = len(changes) - 1
    sent = max(last["frames_shown"] - first["frames_shown"], 1)
    rendered = max(last["frames_rendered"] - first["frames_rendered"], 1)
    return {"frames_per_s": frames / span, "steps_per_s": (changes[-1][1] - changes[0][1]) / span,
            "bytes_per_frame": total_bytes / max(frames, 1),
            "event_loop_ms_per_frame": 1000 * (last["event_loop_s"] - first["event_loop_s"]) / sent,
            "render_ms": 1000 * (last["render_s"] - first["render_s"]) / rendered,
            "answer_ms": 1000 * (last["answer_s"] - first["answer_s"]) / max(last["answers"] - first["answers"], 1),
            "live_resolution": last["model_px"], "strip_resolution": last["strip_px"], "kind": last["kind"],
            "unseen": last.get("unseen", []), "cores": cores}


SERVER_ONLY = """
import json, sys, threading, time
import torch
torch.set_num_threads(1)
sys.setswitchinterval(0.001)  # as flowviz/app.py sets them
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.live import LiveSession
live = LiveSession(ExperimentSpec.load(sys.argv[1]))
def page():  # takes every frame, as a page that keeps up does
    while live.running:
        live.take_frame(); time.sleep(0.04)
live.play(); threading.Thread(target=page, daemon=True).start(); time.sleep(float(sys.argv[3]))
steps, frames, start = live.step, live.frames_rendered, time.perf_counter()
time.sleep(float(sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"steps_per_s": (live.step - steps) / seconds, "frames_per_s": (live.frames_rendered - frames) / seconds}))
live.close()
"""


def server_only_run(preset: Path, seconds: float, warmup: float) -> dict:
    out = subprocess.run([sys.executable, "-c", SERVER_ONLY, str(preset), str(seconds), str(warmup)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--no-browser", action="store_true", help="measure the server side alone (no page)")
    args = parser.parse_args()
    preset = ROOT / "presets" / f"{args.preset}.json"
    before = headless_rate(preset, 8)
    if args.no_browser:
        app = server_only_run(preset, args.seconds, args.warmup)
    else:
        app = browser_run(preset, args.seconds, args.warmup)
    after = headless_rate(preset, 8)
    headless = (before + after) / 2
    print(f"preset {args.preset}: headless {before:.1f} / {after:.1f} steps/s (mean {headless:.1f})")
    where = "server alone" if args.no_browser else "in the browser"
    payload = "" if args.no_browser else f", {app['bytes_per_frame'] / 1024:.0f} KiB/frame"
    print(f"{where}: {app['frames_per_s']:.1f} frames/s, {app['steps_per_s']:.1f} steps/s "
          f"= {100 * app['steps_per_s'] / headless:.0f}% of headless{payload}")
    if not args.no_browser:
        print(f"server: {app['event_loop_ms_per_frame']:.1f} ms of event loop per frame sent, {app['render_ms']:.1f} ms "
              f"to compute a frame, {app['answer_ms']:.0f} ms "
              f"from sending a frame to the page having painted it; model view {app['live_resolution']}², strips {app['strip_resolution']}² "
              f"({app['kind']} frames); out of view, so not drawn: {', '.join(app['unseen']) or 'nothing'}")
        print(f"cores busy: the server {app['cores']['server']:.2f}, Chromium {app['cores']['chromium']:.2f} "
              f"(of {os.cpu_count()})")
        print(json.dumps({"frames_per_s": round(app["frames_per_s"], 2), "steps_per_s": round(app["steps_per_s"], 1),
                          "headless_steps_per_s": round(headless, 1),
                          "kib_per_frame": round(app["bytes_per_frame"] / 1024, 1),
                          "live_resolution": app["live_resolution"], "strip_resolution": app["strip_resolution"],
                          "event_loop_ms_per_frame": round(app["event_loop_ms_per_frame"], 2),
                          "render_ms": round(app["render_ms"], 2)}))


if __name__ == "__main__":
    main()
