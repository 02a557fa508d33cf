"""Soak: many sessions training at once on one server for minutes, then all closed at once; and
open/close cycles. Memory over time, errors, and whether every session kept training.

Starts `panel serve flowviz/app.py` (its log to a file; closed tabs count as gone after 1 s), then:

- soak: opens `--sessions` pages in one headless Chromium, presses Play in each, and every `--every`
  seconds records the server's resident memory, its threads, and the step each page shows. Then it
  closes every page at once, waits until the server has destroyed their sessions (its training threads
  gone), and opens one more page, which must load and train;
- cycles (`--cycles N`): opens a page, presses Play, trains a moment and closes it, N times, and
  measures the server's memory after the first 10 cycles and after the last (sessions destroyed).

Ends with one JSON line: `sessions`, `minutes`, `rss_start_mib` (at minute 3, or the first sample
after it), `rss_end_mib`, `rss_growth_pct`, `stalled` (sessions whose step did not rise over the last
interval), `log_errors` (ERROR/Traceback lines in the server log, the close included),
`next_page_trains`, and with --cycles `cycles`, `cycle_rss_growth_mib`. Exits 1 if a goal of issue
18 is missed (growth > 5%, a stalled session, an error line, no next page; cycles: > 20 MiB).

    python bench/soak.py --sessions 20 --minutes 30
    python bench/soak.py --sessions 0 --cycles 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from app_rate import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, open_when_up

SETTLE_MINUTES = 3  # memory is judged from here: the first sessions allocate what later ones reuse


def status(pid: int) -> tuple[float, int]:
    """Resident memory (MiB) and thread count of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def steps(page) -> int:
    try:
        return int(page.locator("#fv-step").inner_text(timeout=2000).replace(",", ""))
    except Exception:  # noqa: BLE001 (a page that timed out or shows no number reads -1; the soak goes on)
        return -1


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    open_when_up(page, url)
    page.get_by_role("button", name="▶ Play").wait_for(timeout=180_000)
    return page


def trains(page, seconds: float = 20) -> bool:
    """Press Play and see the step counter rise."""
    page.get_by_role("button", name="▶ Play").click(timeout=60_000)
    start, deadline = steps(page), time.time() + seconds
    while time.time() < deadline:
        if steps(page) > max(start, 0):
            return True
        time.sleep(0.5)
    return False


def wait_for_threads(pid: int, at_most: int, timeout: float = 120) -> int:
    """Wait until the server runs at most `at_most` threads (the closed sessions' own are gone)."""
    deadline = time.time() + timeout
    while time.time() < deadline and status(pid)[1] > at_most:
        time.sleep(1)
    return status(pid)[1]


def soak(browser, server, url: str, args) -> dict:
    pages = [open_page(browser, url) for _ in range(args.sessions)]
    for page in pages:  # Play only once every page is open: a loaded server serves new pages slowly
        page.get_by_role("button", name="▶ Play").click(timeout=120_000)
    start, rows = time.time(), []
    while True:
        elapsed = time.time() - start
        rss, threads = status(server.pid)
        counts = [steps(page) for page in pages]
        rows.append((elapsed, rss, threads, counts))
        print(f"{elapsed / 60:5.1f} min  rss {rss:7.0f} MiB  threads {threads:4d}  steps min/median/max "
              f"{min(counts)}/{sorted(counts)[len(counts) // 2]}/{max(counts)}", file=sys.stderr, flush=True)
        if elapsed >= args.minutes * 60:
            break
        time.sleep(args.every)
    settled = next((row for row in rows if row[0] >= SETTLE_MINUTES * 60), rows[0])
    stalled = sum(1 for a, b in zip(rows[-2][3], rows[-1][3]) if b <= a) if len(rows) > 1 else len(pages)
    for page in pages:  # every page closed at once: their websockets drop together
        page.close()
    return {"sessions": args.sessions, "minutes": args.minutes, "rss_start_mib": round(settled[1], 1),
            "rss_end_mib": round(rows[-1][1], 1),
            "rss_growth_pct": round((rows[-1][1] - settled[1]) / settled[1] * 100, 2), "stalled": stalled}


def cycles(browser, server, url: str, count: int) -> dict:
    base_threads = status(server.pid)[1]
    rss = []
    for cycle in range(count):
        page = open_page(browser, url)
        trains(page, 20)
        page.close()
        if cycle in (9, count - 1):
            wait_for_threads(server.pid, base_threads + 2)
            time.sleep(3)
            rss.append(status(server.pid)[0])
            print(f"cycle {cycle + 1}: rss {rss[-1]:.0f} MiB", file=sys.stderr, flush=True)
    return {"cycles": count, "cycle_rss_growth_mib": round(rss[-1] - rss[0], 1) if len(rss) == 2 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--cycles", type=int, default=0, help="open/close cycles after the soak (default none)")
    parser.add_argument("--log", default="soak-server.log")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://localhost:{port}/app"
    with open(args.log, "w") as log:  # the server keeps its own copy of the file
        server = subprocess.Popen([sys.executable, "-m", "panel", "serve", "flowviz/app.py", "--port", str(port),
                                   "--unused-session-lifetime", "1000", "--check-unused-sessions", "500"],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    result: dict = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            first = open_page(browser, url)  # the server's own threads, before any session trains
            first.close()
            time.sleep(3)
            base_threads = status(server.pid)[1]
            if args.sessions:
                result.update(soak(browser, server, url, args))
                result["threads_after_close"] = wait_for_threads(server.pid, base_threads + 2)
                result["next_page_trains"] = trains(open_page(browser, url))
            if args.cycles:
                result.update(cycles(browser, server, url, args.cycles))
            browser.close()
        time.sleep(2)
    finally:
        server.terminate()
        server.wait(20)
    errors = [line for line in Path(args.log).read_text().splitlines() if "ERROR" in line or "Traceback" in line]
    for line in errors[:5]:
        print("log:", line[:200], file=sys.stderr)
    result["log_errors"] = len(errors)
    print(json.dumps(result))
    missed = (result.get("rss_growth_pct", 0) > 5 or result.get("stalled", 0) or errors
              or result.get("next_page_trains") is False or (result.get("cycle_rss_growth_mib") or 0) >= 20)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
