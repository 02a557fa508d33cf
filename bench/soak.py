"""Soak: many sessions training at once on one server, for minutes; errors and memory over time.

Starts `panel serve flowviz/app.py` (its log to a file), opens `--sessions` pages in one headless
Chromium, presses Play in each, and every `--every` seconds records the server's resident memory,
its thread count, and the steps each page shows. At the end: the server log's ERROR/Traceback
lines, the memory trend, and whether every session kept training.

    python bench/soak.py --sessions 20 --minutes 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from app_rate import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, open_when_up


def status(pid: int) -> tuple[float, int]:
    """Resident memory (MiB) and thread count of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def steps(page) -> int:
    try:
        return int(page.locator("#fv-step").inner_text(timeout=2000).replace(",", ""))
    except Exception:  # noqa: BLE001 (a page that timed out or shows no number reads -1; the soak goes on)
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--log", default="soak-server.log")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    with open(args.log, "w") as log:  # the server keeps its own copy of the file
        server = subprocess.Popen([sys.executable, "-m", "panel", "serve", "flowviz/app.py", "--port", str(port)],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pages = []
            for _ in range(args.sessions):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                open_when_up(page, f"http://localhost:{port}/app")
                page.get_by_role("button", name="▶ Play").wait_for(timeout=120_000)
                pages.append(page)
            # Play only once every page is open: a loaded server serves new pages slowly.
            for page in pages:
                page.get_by_role("button", name="▶ Play").click(timeout=120_000)
            start = time.time()
            baseline = None
            while True:
                elapsed = time.time() - start
                rss, threads = status(server.pid)
                counts = [steps(page) for page in pages]
                rows.append((elapsed, rss, threads, counts))
                baseline = baseline or rss
                print(f"{elapsed / 60:5.1f} min  rss {rss:7.0f} MiB  threads {threads:4d}  "
                      f"steps min/median/max {min(counts)}/{sorted(counts)[len(counts) // 2]}/{max(counts)}", flush=True)
                if elapsed >= args.minutes * 60:
                    break
                time.sleep(args.every)
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    text = Path(args.log).read_text()
    errors = [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    stalled = sum(1 for a, b in zip(rows[-2][3], last[3]) if b <= a) if len(rows) > 1 else 0
    print(f"server log: {len(errors)} ERROR/Traceback lines" + (f"; first: {errors[0]}" if errors else ""))
    print(f"memory: {first[1]:.0f} MiB after the first interval, {last[1]:.0f} MiB at the end "
          f"({(last[1] - first[1]) / max(first[1], 1) * 100:+.1f}%); sessions that stopped training: {stalled}")


if __name__ == "__main__":
    main()
