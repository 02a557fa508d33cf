"""Cold start: seconds from `panel serve flowviz/app.py` to an interactive page, in Chromium.

    python bench/coldstart.py [--repeats 3]

Each repeat starts a fresh server process and a fresh Chromium and reports, from the moment the
server process is launched:
- listening: the server accepts connections;
- interactive: the first page shows ▶ Play and its density strip has drawn (a canvas in the page);
- and, from its own request, how long a second page takes to become interactive (a warm server).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from app_rate import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port
from classroom_proxy import listening

# Every canvas inside Panel's shadow roots; the strips are Bokeh canvases.
CANVASES = """
() => {
  let count = 0;
  const visit = (root) => {
    for (const node of root.querySelectorAll('*')) {
      if (node.tagName === 'CANVAS' && node.width > 0) count++;
      if (node.shadowRoot) visit(node.shadowRoot);
    }
  };
  visit(document);
  return count;
}
"""


def interactive(page, url: str, timeout_s: float = 300) -> None:
    page.goto(url, timeout=timeout_s * 1000)
    page.get_by_role("button", name="▶ Play").wait_for(timeout=timeout_s * 1000)
    page.wait_for_function(f"({CANVASES})() >= 5", timeout=timeout_s * 1000)


def one_start() -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://localhost:{port}/app"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "panel", "serve", "flowviz/app.py", "--port", str(port)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not listening("127.0.0.1", port):
                time.sleep(0.05)
            accepting = time.perf_counter() - started
            interactive(browser.new_page(viewport={"width": 1600, "height": 1200}), url)
            first = time.perf_counter() - started
            again = time.perf_counter()
            interactive(browser.new_page(viewport={"width": 1600, "height": 1200}), url)
            second = time.perf_counter() - again
        finally:
            server.terminate()
            server.wait(10)
            browser.close()
    return {"listening": accepting, "first": first, "second": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [one_start() for _ in range(args.repeats)]
    print(f"median (min–max) of {args.repeats} fresh starts, seconds\n")
    print("| from `panel serve` to | seconds |")
    print("|---|---|")
    for key, label in (("listening", "the server accepting connections"), ("first", "the first page interactive (▶ Play, strips drawn)"),
                       ("second", "a second page interactive, from its request")):
        values = [run[key] for run in runs]
        print(f"| {label} | {statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f}) |")


if __name__ == "__main__":
    main()
