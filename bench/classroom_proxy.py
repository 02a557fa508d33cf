"""A classroom behind nginx: several `panel serve` processes, sticky sessions, checked in a browser.

Starts `--procs` processes of `panel serve flowviz/app.py` (127.0.0.1, ports 5007, 5008, ...), starts
nginx with bench/nginx-flowviz.conf (backends and listen port filled in, written to a temp prefix),
opens `--pages` pages through http://127.0.0.1:8080/app in headless Chromium (one browser context
each, so each page is its own "student" with its own affinity cookie), waits for "▶ Play", presses
it on every page, waits `--seconds`, and checks on every page that

- the step counter rose (training results reach the page over the websocket, through nginx);
- its websocket to /app/ws opened, received frames and never closed or errored, and the console
  shows no error and no "Lost websocket";
- nginx sent its page, static files and websocket to ONE backend (from nginx's access log, which
  logs $upstream_addr and the affinity key per request);
- every backend created exactly as many sessions (its /rest/session_info) and opened as many
  websockets (its log) as nginx gave it pages: no session was built twice, and its log shows no
  error while the pages were open.

With `--hosts N` the backends stand in for N machines behind one nginx: host i listens on its own
loopback address 127.0.0.(i+2), every host on the same port(s) (`--base-port`, and `--procs` per host,
default 1), as real hosts each running `panel serve ... --port 5007 --address <its address>` would.
nginx's upstream names those addresses, and every check above (nginx's $upstream_addr, each
backend's /rest/session_info and log) goes by the backend's own address:port. Only loopback
addresses (127.0.0.0/8) are ever used.

Everything it started is stopped at the end, also on failure or Ctrl-C. Prints a markdown table;
exits 1 if any check failed.

    python bench/classroom_proxy.py                      # 2 processes, 4 pages
    python bench/classroom_proxy.py --procs 3 --pages 6
    python bench/classroom_proxy.py --hosts 2 --pages 4  # 127.0.0.2:5007 and 127.0.0.3:5007
    python bench/classroom_proxy.py --sticky ip          # ip_hash: every page on one backend
    python bench/classroom_proxy.py --sticky none        # round robin: the checks should fail
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "bench" / "nginx-flowviz.conf"
CHROMIUM = os.environ.get("FLOWVIZ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
COOKIE = "fv_affinity"
LOG_LINE = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) \d+ upstream=(?P<upstream>\S+(?:, \S+)*) '
                      r'key=(?P<key>\S+)')


def say(*parts) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
Backend = tuple[str, int]  # (address, port): how nginx's upstream and its $upstream_addr name a backend


def loopback(address: str) -> str:
    """`address` itself if it is an IPv4 loopback address; this bench never targets anything else."""
    if ipaddress.ip_address(address) not in LOOPBACK:
        raise ValueError(f"{address} is not a loopback address (127.0.0.0/8)")
    return address


def backend_list(hosts: int, procs: int, base_port: int) -> list[Backend]:
    """Without hosts: `procs` ports on 127.0.0.1. With hosts: host i is 127.0.0.(i+2), each with the
    same `procs` ports, like machines that all run flowviz on the same port."""
    addresses = ["127.0.0.1"] if hosts == 0 else [f"127.0.0.{i + 2}" for i in range(hosts)]
    return [(loopback(address), base_port + j) for address in addresses for j in range(procs)]


def name(backend: Backend) -> str:
    """address:port, as nginx writes $upstream_addr."""
    return f"{backend[0]}:{backend[1]}"


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((loopback(address), port)) == 0


def render_config(template: str, backends: list[Backend], listen: int, sticky: str) -> str:
    """bench/nginx-flowviz.conf with its backends ((address, port) pairs), listen port and stickiness
    filled in."""
    servers = "".join(f"        server {name(b)} max_fails=1 fail_timeout=10s;\n" for b in backends)
    text, n = re.subn(r"(# BACKENDS[^\n]*\n).*?(\s*# END BACKENDS)",
                      lambda m: m.group(1) + servers.rstrip("\n") + m.group(2), template, flags=re.DOTALL)
    assert n == 1, "no BACKENDS block in the config"
    text, n = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen};", text)
    assert n == 1, "no listen line in the config"
    if sticky != "cookie":
        balance = "ip_hash;" if sticky == "ip" else "# round robin"
        text, n = re.subn(r"hash \$fv_affinity_key consistent;", balance, text)
        assert n == 1, "no hash line in the config"
    return text


def backend_log_path(workdir: Path, backend: Backend) -> Path:
    return workdir / f"backend-{backend[0]}-{backend[1]}.log"


class Stack:
    """The processes this run started, stopped in reverse order whatever happens."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.backends: dict[Backend, subprocess.Popen] = {}
        self.nginx: subprocess.Popen | None = None
        self.nginx_cmd: list[str] = []

    def start_backend(self, backend: Backend, listen: int, xheaders: bool) -> None:
        # --rest-session-info: /rest/session_info counts the sessions this process created (checked below).
        address, port = loopback(backend[0]), backend[1]
        cmd = [sys.executable, "-m", "panel", "serve", "flowviz/app.py", "--port", str(port), "--address", address,
               f"--allow-websocket-origin=127.0.0.1:{listen}", f"--allow-websocket-origin=localhost:{listen}",
               "--rest-session-info", "--session-history", "-1"]
        if xheaders:
            cmd.append("--use-xheaders")
        with open(backend_log_path(self.workdir, backend), "w") as log:  # the child keeps its own copy of the file
            self.backends[backend] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def start_nginx(self, conf: Path) -> None:
        base = ["nginx", "-c", str(conf), "-p", f"{self.workdir}/", "-e", str(self.workdir / "logs" / "error.log")]
        check = subprocess.run(base + ["-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.nginx_cmd = base
        # In the foreground, so it is our child; `-s quit` still finds it through the pid file.
        with open(self.workdir / "logs" / "nginx-stderr.log", "w") as stderr:  # the child keeps its own copy
            self.nginx = subprocess.Popen(base + ["-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=stderr)

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            subprocess.run(self.nginx_cmd + ["-s", "quit"], capture_output=True, check=False)  # the wait below judges
            try:
                self.nginx.wait(20)
            except subprocess.TimeoutExpired:
                self.nginx.terminate()  # SIGTERM: fast shutdown of master and workers
                try:
                    self.nginx.wait(10)
                except subprocess.TimeoutExpired:
                    self.nginx.kill()
                    self.nginx.wait()
        for proc in self.backends.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.backends.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def watch(page) -> dict:
    """Record what a page's console and websockets do."""
    record = {"errors": [], "lost": [], "sockets": []}

    def on_console(msg):
        text = msg.text
        if msg.type == "error":
            record["errors"].append(text[:200])
        if re.search(r"lost websocket|connection lost|websocket.*(closed|error)", text, re.IGNORECASE):
            record["lost"].append(text[:200])

    def on_socket(ws):
        sock = {"url": ws.url, "frames": 0, "closed": False, "error": None}
        record["sockets"].append(sock)
        ws.on("framereceived", lambda _payload: sock.__setitem__("frames", sock["frames"] + 1))
        ws.on("close", lambda _ws: sock.__setitem__("closed", True))
        ws.on("socketerror", lambda err: sock.__setitem__("error", str(err)[:200]))

    page.on("console", on_console)
    page.on("pageerror", lambda err: record["errors"].append(str(err)[:200]))
    page.on("requestfailed", lambda req: record["errors"].append(f"request failed: {req.url[:120]} ({req.failure})"))
    page.on("websocket", on_socket)
    return record


def step_of(page) -> int | None:
    try:
        return int(page.locator("#fv-step").first.inner_text(timeout=10_000).replace(",", ""))
    except Exception:  # noqa: BLE001 (a page that timed out, closed or shows no number: "no reading", not a crash)
        return None


def read_access_log(path: Path) -> dict[str, list[dict]]:
    """nginx's access log, grouped by affinity key."""
    by_key: dict[str, list[dict]] = collections.defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            m = LOG_LINE.search(line)
            if m:
                by_key[m["key"]].append(m.groupdict())
    return by_key


def session_info(backend: Backend) -> tuple[int, int]:
    """Sessions a backend has created in all, and those rendered in a page and still live."""
    url = f"http://{loopback(backend[0])}:{backend[1]}/rest/session_info"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight there, whatever *_proxy says
    with opener.open(url, timeout=30) as response:
        info = json.load(response)["session_info"]
    return info["total"], info["live"]


def backend_log(log: Path, until: float) -> tuple[int, list[str]]:
    """Websockets opened and error lines in a backend's log, up to `until` (the browser's closing
    makes Tornado log closed-socket tracebacks, which are expected)."""
    opened, errors, stamp = 0, [], 0.0
    for line in (log.read_text(errors="replace") if log.exists() else "").splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
        if m:
            stamp = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
        if stamp > until:
            break
        opened += "WebSocket connection opened" in line
        if re.search(r"ERROR|Traceback|Exception", line):
            errors.append(line[:160])
    return opened, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=0,
                        help="stand-in hosts: host i listens on 127.0.0.(i+2), all on the same port(s) "
                             "(default 0: every backend on 127.0.0.1)")
    parser.add_argument("--procs", type=int, default=None,
                        help="panel serve processes (default 2), or per host with --hosts (default 1)")
    parser.add_argument("--pages", type=int, default=4, help="browser pages, one context each (default 4)")
    parser.add_argument("--base-port", type=int, default=5007,
                        help="first backend port (default 5007); with --hosts, the port every host uses first")
    parser.add_argument("--listen", type=int, default=8080, help="nginx port on 127.0.0.1 (default 8080)")
    parser.add_argument("--sticky", choices=("cookie", "ip", "none"), default="cookie",
                        help="cookie: hash of the fv_affinity cookie (default); ip: ip_hash; "
                             "none: round robin (a negative control: it should fail)")
    parser.add_argument("--no-xheaders", action="store_true", help="start the backends without --use-xheaders")
    parser.add_argument("--seconds", type=float, default=10, help="training time after Play (default 10)")
    parser.add_argument("--load-timeout", type=float, default=300, help="seconds a page may take to show Play")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs and logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep the table in order with the progress lines

    if args.procs is None:
        args.procs = 1 if args.hosts else 2
    if not 0 <= args.hosts <= 253 or args.procs < 1:
        parser.error("--hosts must be 0 to 253 (127.0.0.2 to 127.0.0.254) and --procs at least 1")
    backends = backend_list(args.hosts, args.procs, args.base_port)
    busy = [name(b) for b in backends + [("127.0.0.1", args.listen)] if listening(*b)]
    if busy:
        print(f"ports already in use: {busy}; stop what holds them or pick --base-port/--listen", file=sys.stderr)
        return 2
    if shutil.which("nginx") is None:
        print("no nginx on the PATH: apt-get install -y nginx", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="fv-classroom-"))
    (workdir / "logs").mkdir()
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too
    url = f"http://127.0.0.1:{args.listen}/app"
    failures = []
    started = time.time()
    try:
        for backend in backends:
            stack.start_backend(backend, args.listen, xheaders=not args.no_xheaders)
        conf = workdir / "nginx.conf"
        conf.write_text(render_config(CONF.read_text(), backends, args.listen, args.sticky))
        stack.start_nginx(conf)
        deadline = time.time() + 120
        while not all(listening(*b) for b in backends + [("127.0.0.1", args.listen)]):
            dead = [name(b) for b, proc in stack.backends.items() if proc.poll() is not None]
            if dead or stack.nginx.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"not up: backends exited {dead}, nginx rc {stack.nginx.poll()}; logs in {workdir}")
            time.sleep(0.25)
        say(f"{len(backends)} backends {[name(b) for b in backends]} and nginx on 127.0.0.1:{args.listen} are up "
            f"({time.time() - started:.0f} s); "
            f"sticky={args.sticky}, workdir {workdir}")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                pages = []
                for i in range(args.pages):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    page = context.new_page()
                    rec = watch(page)
                    rec.update(index=i + 1, context=context, page=page, t0=time.time(), problems=[])
                    page.goto(url, wait_until="commit", timeout=args.load_timeout * 1000)
                    pages.append(rec)
                for rec in pages:  # all loading at once; wait for each in turn
                    left = max(5.0, rec["t0"] + args.load_timeout - time.time())
                    try:
                        rec["page"].get_by_role("button", name="▶ Play").wait_for(timeout=left * 1000)
                        rec["load_s"] = time.time() - rec["t0"]
                        say(f"page {rec['index']} ready after {rec['load_s']:.0f} s")
                    except Exception as exc:  # noqa: BLE001 (one page's failure is recorded; the run goes on)
                        rec["load_s"] = None
                        rec["problems"].append(f"no Play button after {args.load_timeout:.0f} s")
                        say(f"page {rec['index']}: {type(exc).__name__}")
                ready = [rec for rec in pages if rec["load_s"] is not None]
                for rec in ready:
                    rec["before"] = step_of(rec["page"])
                    try:
                        rec["page"].get_by_role("button", name="▶ Play").click(timeout=30_000)
                    except Exception as exc:  # noqa: BLE001 (one page's failure is recorded; the run goes on)
                        rec["problems"].append(f"Play click failed: {type(exc).__name__}")
                say(f"pressed Play on {len(ready)} pages; training for {args.seconds:.0f} s")
                time.sleep(args.seconds)
                for rec in pages:
                    rec["after"] = step_of(rec["page"]) if rec["load_s"] is not None else None
                    cookies = {c["name"]: c["value"] for c in rec["context"].cookies()}
                    rec["key"] = cookies.get(COOKIE)
                    if rec["load_s"] is not None and (
                            rec["before"] is None or rec["after"] is None or rec["after"] <= rec["before"]):
                        rec["problems"].append(f"step counter did not rise ({rec['before']} → {rec['after']})")
                    sockets = [s for s in rec["sockets"] if s["url"].split("?")[0].endswith("/app/ws")]
                    if not sockets:
                        rec["problems"].append("no websocket to /app/ws")
                    for s in sockets:
                        if s["closed"] or s["error"]:
                            rec["problems"].append(f"websocket closed/failed: {s['error'] or 'closed'}")
                        elif s["frames"] == 0:
                            rec["problems"].append("websocket received no frames")
                    rec["frames"] = sum(s["frames"] for s in sockets)
                    if rec["errors"]:
                        first = next((e for e in rec["errors"] if e.startswith("request failed")), rec["errors"][0])
                        rec["problems"].append(f"{len(rec['errors'])} console errors: {first}")
                    if rec["lost"]:
                        rec["problems"].append(f"connection lost: {rec['lost'][0]}")
                    if args.sticky == "cookie" and not rec["key"]:
                        rec["problems"].append(f"no {COOKIE} cookie")
                sessions = {backend: session_info(backend) for backend in backends}
            finally:
                closed_at = time.time()
                browser.close()  # closes the websockets, so nginx logs them
        time.sleep(1.5)

        # Which backend served each page, from nginx's log (websocket lines are written on close).
        log = read_access_log(workdir / "logs" / "access.log")
        per_backend = collections.Counter()
        for rec in pages:
            lines = log.get(rec["key"] or "", [])
            page_get = [l for l in lines if l["path"].split("?")[0] == "/app" and l["status"] == "200"]
            ws = [l for l in lines if l["path"].split("?")[0] == "/app/ws"]
            upstreams = {l["upstream"] for l in lines}
            rec["get_backend"] = ",".join(sorted({l["upstream"] for l in page_get})) or "-"
            rec["ws_backend"] = ",".join(sorted({f"{l['upstream']} ({l['status']})" for l in ws})) or "-"
            rec["requests"] = len(lines)
            if len(page_get) != 1:
                rec["problems"].append(f"{len(page_get)} page loads in nginx's log")
            if not ws or any(l["status"] != "101" for l in ws):
                rec["problems"].append(f"websocket in nginx's log: {rec['ws_backend']}")
            if len(upstreams) != 1:
                rec["problems"].append(f"requests went to {len(upstreams)} backends: {sorted(upstreams)}")
            if len(page_get) == 1:
                per_backend[page_get[0]["upstream"]] += 1

        print()
        procs = f"{args.procs} process{'es' if args.procs != 1 else ''}"
        layout = f"{args.hosts} hosts × {procs}" if args.hosts else procs
        print(f"## classroom behind nginx: {layout}, {args.pages} pages, sticky={args.sticky}"
              f"{', no --use-xheaders' if args.no_xheaders else ''}")
        print()
        print("| page | page GET → backend | websocket → backend (status) | requests | load s "
              "| steps before → after | ws frames | result |")
        print("|---|---|---|---|---|---|---|---|")
        for rec in pages:
            load = f"{rec['load_s']:.0f}" if rec["load_s"] is not None else "–"
            steps = f"{rec.get('before')} → {rec.get('after')}" if rec["load_s"] is not None else "–"
            result = "ok" if not rec["problems"] else "FAIL: " + "; ".join(rec["problems"])
            print(f"| {rec['index']} | {rec['get_backend']} | {rec['ws_backend']} | {rec['requests']} | {load} "
                  f"| {steps} | {rec['frames']} | {result} |")
            if rec["problems"]:
                failures.append(f"page {rec['index']}")
        print()
        print("| backend | pages (nginx) | sessions created | sessions live | websockets opened | error lines |")
        print("|---|---|---|---|---|---|")
        for backend in backends:
            addr = name(backend)
            total, live = sessions[backend]
            opened, errors = backend_log(backend_log_path(workdir, backend), closed_at)
            print(f"| {addr} | {per_backend[addr]} | {total} | {live} | {opened} | {len(errors)} |")
            if not total == live == opened == per_backend[addr]:
                failures.append(f"{addr}: {total} sessions created, {live} live, {opened} websockets "
                                f"for {per_backend[addr]} pages")
            if errors:
                failures.append(f"{addr}: {errors[0]}")
        if args.pages >= len(backends) and len(per_backend) < len(backends):
            why = "every page comes from 127.0.0.1" if args.sticky == "ip" else "random keys"
            print(f"\nnote: the pages used {len(per_backend)} of {len(backends)} backends ({why}; not a failure)")
        error_log = workdir / "logs" / "error.log"
        nginx_errors = [line for line in (error_log.read_text().splitlines() if error_log.exists() else [])
                        if re.search(r"\[(error|crit|alert|emerg)\]", line)]
        if nginx_errors:
            failures.append(f"nginx error.log: {nginx_errors[0][:160]}")
    except Exception as exc:  # noqa: BLE001 (reported as a failure; `finally` still stops every process)
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        stack.stop()
        survivors = [name(b) for b, proc in stack.backends.items() if proc.poll() is None]
        if survivors or (stack.nginx is not None and stack.nginx.poll() is None):
            failures.append(f"still running after stop: backends {survivors}")
        say(f"stopped nginx and {len(stack.backends)} backends ({time.time() - started:.0f} s in all)")
        if not args.keep and not failures:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    if failures:
        print(f"**FAILED** ({len(failures)}): " + "; ".join(failures) + f" — logs kept in {workdir}")
        return 1
    print("**passed**: every page trained through nginx, with its page and websocket on one backend.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
