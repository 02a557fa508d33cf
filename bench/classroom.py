"""A classroom on one server: N sessions training at once; frames/s per session, server CPU, memory.

    python bench/classroom.py --sessions 1 10 30 [--seconds 30] [--preset realnvp-moons]

Every session opens the preset through its link (`?spec=...`); without --preset, the app's default.

Starts `panel serve flowviz/app.py` and, for each N, opens N sessions the way a browser does (GET the
page, open its websocket, pull the document) and presses ▶ Play in each (the Toggle's `active`,
as BokehJS sends it). The students are light Bokeh-protocol clients in this one process, not
browsers: on a 2-core machine, N Chromiums would measure the browsers, and in a classroom they run
on the students' own machines. Each client counts the document patches that carry a new step
counter (one per frame pushed to it) and reads the step from them.

With `--procs K` (K > 1) the sessions go through nginx to K `panel serve` processes, sticky by the
`fv_affinity` cookie (bench/nginx-flowviz.conf, as bench/classroom_proxy.py runs it); each client
sends its own cookie. CPU and memory are then the sum over the K processes.

Reports per-session frames/s (minimum, median), steps/s per session, the server's CPU (cores busy,
from /proc) and its resident memory per session above the idle server. Then, while the N train:
one more page is opened (`join_s`: until its document has arrived, what BokehJS renders from), and
every student presses Pause at a random moment of 3 s (`click_ms_p95`: until its page saw the
toggle turn back into ▶ Play). Each client answers the page's FrameClock the moment a frame that
asks for an answer arrives, as a browser that paints at once would. Every student sees every panel
at once (the worst case) unless `--screen 1600x1000` gives them a window: each then reports the
panels that window does not show as off screen, as a browser's IntersectionObserver does, and the
server skips them; which panels those are is read from one Chromium page of that size at the start.
(2026-12-04, four runs each in ABBA order: with 1600×1000 windows, the ln|det J| and sample strips
off screen, 92-107 KiB a frame against 136-173, but no more frames: fps_min 1.45-1.9 against
1.4-2.3.) The sessions of one N are closed before the next N starts. Ends with one JSON line per N: sessions, procs, fps_min,
fps_median, steps_per_s_median, cores_busy, mib_per_session, join_s, click_ms_p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(rb"fv-step(?:'>|&#x27;&gt;)([\d,]+)")  # the status line's step counter, in a patch
TICKS = 100  # /proc clock ticks per second (Linux)


PLAY_LABEL = ("▶ Play".encode(), b"\\u25b6 Play")  # the toggle's label once the server has paused


@dataclass
class Student:
    frames: list[tuple[float, int]] = field(default_factory=list)  # (time, step) of every frame received
    bytes: int = 0
    error: str | None = None
    clicked_at: float | None = None  # when this student pressed Pause
    click_ms: float | None = None  # until the page saw the toggle turn back into ▶ Play


async def _read(ws) -> tuple[dict, bytes, list[bytes]]:
    """One Bokeh protocol message: header, metadata, content, then a (header, payload) pair per buffer."""
    header = json.loads(await ws.read_message())
    await ws.read_message()
    content = await ws.read_message()
    buffers = []
    for _ in range(header.get("num_buffers", 0)):
        await ws.read_message()
        buffers.append(await ws.read_message())
    if content is None:
        raise ConnectionError("the server closed the websocket")
    return header, content if isinstance(content, bytes) else content.encode(), buffers


async def _send(ws, msgtype: str, content: dict) -> None:
    await ws.write_message(json.dumps({"msgid": uuid.uuid4().hex, "msgtype": msgtype}))
    await ws.write_message("{}")
    await ws.write_message(json.dumps(content))


def _play_toggle(document: object) -> str | None:
    """The id of the Toggle labelled ▶ Play in a pulled document (its JSON)."""
    if isinstance(document, dict):
        if document.get("name") == "Toggle" and "Play" in str(document.get("attributes", {}).get("label", "")):
            return document["id"]
        items = document.values()
    elif isinstance(document, list):
        items = document
    else:
        return None
    for item in items:
        found = _play_toggle(item)
        if found:
            return found
    return None


def _components(document: object, class_name: str) -> dict[str, dict]:
    """Component id -> its parameters, for each component of the Panel class `class_name` in a pulled
    document (its JSON). The parameters live in a data model of a type Panel names after the class."""
    models: dict[str, dict] = {}

    def collect(node):
        if isinstance(node, dict):
            if isinstance(node.get("id"), str) and isinstance(node.get("attributes"), dict):
                models[node["id"]] = node  # (a model's first mention; later ones are its id alone)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    parameters = {i: model["attributes"] for i, model in models.items()
                  if str(model.get("name", "")).startswith(class_name)}
    found = {}
    for model in models.values():
        data = model["attributes"].get("data")
        if isinstance(data, dict) and data.get("id") in parameters:
            found[model["id"]] = parameters[data["id"]]
    return found


def _frame_clock(document: object) -> str | None:
    """The page's FrameClock component: a browser tells it when it has painted a frame, and gets the
    next frame only then."""
    return next(iter(_components(document, "FrameClock")), None)


def _sent(component: str, message: dict) -> dict:
    """What BokehJS sends when a component's page side sends `message` (`model.send_msg`)."""
    data = {"type": "map", "entries": list(message.items())}
    return {"events": [{"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": {
        "type": "event", "name": "data_event", "values": {"type": "map", "entries": [["model", {"id": component}],
                                                                                     ["data", data]]}}}]}


def panels_off_screen(url: str, width: int, height: int) -> set[str]:
    """The frame panels that a Chromium page of `width` × `height` reports off screen once it has
    loaded; each student then reports the same, as its browser would (the server skips those)."""
    from app_rate import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    from flowviz.ui.pickers import InView

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, timeout=300_000)
            page.get_by_role("button", name="▶ Play").wait_for(timeout=300_000)
            page.wait_for_timeout(3000)  # the strips built after the page loaded report too
            markers = page.evaluate(InView.REPORTED_ON_PAGE)
        finally:
            browser.close()
    if not markers:
        raise SystemExit("the page has no InView markers (data-panel): is this flowviz's app?")
    return {panel for panel, in_view in markers.items() if in_view == "false"}


def _entries(value: object) -> dict:
    """A Bokeh-serialised map ({"type": "map", "entries": [[key, value], ...]}) as a dict."""
    return dict(value.get("entries", [])) if isinstance(value, dict) and value.get("type") == "map" else {}


def _shown(patch: dict, component: str) -> int | None:
    """The frame count a patch's FrameClock message carries (the server sends it as an ESM message,
    last in a frame's patch) when it asks the page to answer, or None."""
    for event in patch.get("events", []):
        data = event.get("msg_data", {}) if event.get("kind") == "MessageSent" else {}
        if not isinstance(data, dict) or data.get("name") != "esm_event":
            continue
        values = _entries(data.get("values"))
        message = _entries(values.get("data"))
        shown = message.get("shown")
        if values.get("model", {}).get("id") == component and isinstance(shown, int) and message.get("answer", True):
            return shown
    return None


async def attend(url: str, student: Student, stop: asyncio.Event, click: asyncio.Event | None = None,
                 joined: list | None = None, off_screen: frozenset[str] = frozenset()) -> None:
    """One student: open the page, report the panels in `off_screen` as off screen, press Play, read
    frames until `stop`; once `click` is set, press Pause at a random moment of the next 3 s and time
    until the page sees it. With `joined`, only open the page and append the seconds until its
    document arrived."""
    cookie = {"Cookie": f"fv_affinity={uuid.uuid4().hex}"}  # one browser: its page and websocket stick together
    opened = time.perf_counter()
    try:
        page = await AsyncHTTPClient().fetch(url, headers=cookie, request_timeout=300)
        host = url.split("/")[2]
        token = re.search(rb'"token":\s*"([^"]+)"', page.body).group(1).decode()
        ws = await websocket_connect(HTTPRequest(f"ws://{host}/app/ws", headers=cookie, request_timeout=300),
                                     subprotocols=["bokeh", token], max_message_size=1 << 30)
        await _read(ws)  # ACK
        await _send(ws, "PULL-DOC-REQ", {})
        header, content, _ = await _read(ws)
        while header["msgtype"] != "PULL-DOC-REPLY":
            header, content, _ = await _read(ws)
        if joined is not None:
            joined.append(time.perf_counter() - opened)
            ws.close()
            return
        document = json.loads(content)
        toggle, clock = _play_toggle(document), _frame_clock(document)
        unseen = [i for i, parameters in _components(document, "InView").items() if parameters.get("panel") in off_screen]
        writing = asyncio.Lock()  # a message is three websocket writes: one sender at a time

        async def send(content: dict) -> None:
            async with writing:
                await _send(ws, "PATCH-DOC", content)

        async def press_pause() -> None:
            await click.wait()
            await asyncio.sleep(random.uniform(0, 3))
            student.clicked_at = time.perf_counter()
            await send({"events": [{"kind": "ModelChanged", "model": {"id": toggle}, "attr": "active", "new": False}]})

        if click is not None:
            pausing = asyncio.create_task(press_pause())
        # What BokehJS says once it has rendered the page: Panel runs its onload callbacks on it.
        await _send(ws, "PATCH-DOC", {"events": [{"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": {
            "type": "event", "name": "document_ready", "values": {"type": "map", "entries": []}}}]})
        for marker in unseen:  # as a browser's IntersectionObserver reports them
            await send(_sent(marker, {"in_view": False}))
        await _send(ws, "PATCH-DOC", {"events": [{"kind": "ModelChanged", "model": {"id": toggle}, "attr": "active",
                                                  "new": True}]})
        while not stop.is_set():
            header, content, buffers = await _read(ws)
            student.bytes += len(content) + sum(len(b) for b in buffers)
            hit = STEP.search(content) if header["msgtype"] == "PATCH-DOC" else None
            if hit:
                student.frames.append((time.perf_counter(), int(hit.group(1).replace(b",", b""))))
            if student.clicked_at and student.click_ms is None and any(label in content for label in PLAY_LABEL):
                student.click_ms = 1000 * (time.perf_counter() - student.clicked_at)
            if clock and header["msgtype"] == "PATCH-DOC" and b'"shown"' in content:
                shown = _shown(json.loads(content), clock)
                if shown is not None:
                    await send(_sent(clock, {"painted": shown}))  # painted at once
        if click is not None:
            pausing.cancel()
        ws.close()
    except Exception as error:  # noqa: BLE001 - reported per student
        student.error = f"{type(error).__name__}: {error}"


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def rss_mib(pids: list[int]) -> float:
    from soak import status

    return sum(status(pid)[0] for pid in pids)


async def classroom(url: str, pid: list[int], sessions: int, seconds: float, warmup: float,
                    off_screen: frozenset[str] = frozenset()) -> dict:
    # Tornado's client queues all but 10 requests at once by default: every student loads at once.
    AsyncHTTPClient.configure(None, max_clients=max(10, sessions))
    students = [Student() for _ in range(sessions)]
    stop, click = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(attend(url, s, stop, click, off_screen=off_screen)) for s in students]
    opened = time.perf_counter()
    while sum(1 for s in students if s.frames or s.error) < sessions and time.perf_counter() - opened < 600:
        await asyncio.sleep(0.5)
    ready = time.perf_counter() - opened
    await asyncio.sleep(warmup)
    start, ticks = time.perf_counter(), cpu_ticks(pid)
    marks = [len(s.frames) for s in students]
    await asyncio.sleep(seconds)
    end, busy, memory = time.perf_counter(), (cpu_ticks(pid) - ticks) / TICKS, rss_mib(pid)
    joined: list[float] = []
    await attend(url, Student(), stop, joined=joined)  # one more page, while the others train
    click.set()
    await asyncio.sleep(13)  # every student presses Pause within 3 s; 10 s more for the page to see it
    stop.set()
    fps, steps = [], []
    for student, mark in zip(students, marks):
        window = [f for f in student.frames[mark:] if f[0] <= end]
        fps.append((len(window) - 1) / (end - start) if len(window) > 1 else 0.0)
        steps.append((window[-1][1] - window[0][1]) / (end - start) if len(window) > 1 else 0.0)
    await asyncio.wait(tasks, timeout=30)
    clicks = sorted(s.click_ms if s.click_ms is not None else float("inf") for s in students)
    return {"sessions": sessions, "open_s": ready, "join_s": joined[0] if joined else float("inf"),
            "click_ms_p95": clicks[min(len(clicks) - 1, math.ceil(0.95 * len(clicks)) - 1)], "fps_min": min(fps), "fps_median": statistics.median(fps),
            "steps_median": statistics.median(steps), "cores": busy / (end - start), "rss_mib": memory,
            "kib_per_frame": sum(s.bytes for s in students) / 1024 / max(sum(len(s.frames) for s in students), 1),
            "errors": [s.error for s in students if s.error]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--preset", help="a preset name from presets/ (default: the app's default experiment)")
    parser.add_argument("--procs", type=int, default=1, help="panel serve processes; more than 1 go behind nginx")
    parser.add_argument("--screen", metavar="WIDTHxHEIGHT",
                        help="each student's browser window (e.g. 1600x1000): the panels it does not show are "
                             "reported off screen; without it every student sees every panel, the worst case")
    args = parser.parse_args()
    width, height = (int(n) for n in args.screen.lower().split("x")) if args.screen else (0, 0)
    sys.path.insert(0, str(ROOT / "bench"))
    from app_rate import free_port
    from classroom_proxy import CONF, Stack, render_config

    from flowviz.core.link import LINK_PARAMETER, spec_to_link
    from flowviz.core.spec import ExperimentSpec

    port = free_port()
    url = f"http://127.0.0.1:{port}/app"
    if args.preset:
        url += f"?{LINK_PARAMETER}={spec_to_link(ExperimentSpec.load(ROOT / 'presets' / f'{args.preset}.json'))}"
    workdir = Path(tempfile.mkdtemp(prefix="fv-classroom-"))
    (workdir / "logs").mkdir()
    stack = Stack(workdir)
    try:
        if args.procs == 1:
            stack.start_backend(("127.0.0.1", port), port, xheaders=False)
        else:
            backends = [("127.0.0.1", free_port()) for _ in range(args.procs)]
            for backend in backends:
                stack.start_backend(backend, port, xheaders=True)
            conf = workdir / "nginx.conf"
            conf.write_text(render_config(CONF.read_text(), backends, port, "cookie"))
            stack.start_nginx(conf)
        pids = [proc.pid for proc in stack.backends.values()]
        for address in [f"http://{host}:{backend_port}/app" for host, backend_port in stack.backends] + [url]:
            for _ in range(600):
                try:
                    urllib.request.urlopen(address, timeout=60).read()
                    break
                except OSError:
                    time.sleep(0.2)
        off_screen = frozenset(panels_off_screen(url, width, height)) if args.screen else frozenset()
        time.sleep(5)  # each process built one page (torch loaded, the app compiled); let them drop it
        idle = rss_mib(pids)
        print(f"preset {args.preset or '(default)'}; {args.procs} server process{'es' * (args.procs > 1)}, "
              f"idle after one page: {idle:.0f} MiB; "
              f"{args.seconds:g} s per row after {args.warmup:g} s of warm-up; "
              + (f"a {width}×{height} window, off screen: {', '.join(sorted(off_screen)) or 'nothing'}"
                 if args.screen else "every student sees every panel") + "\n")
        print("| sessions | frames/s per session, min / median | steps/s per session (median) | server cores busy "
              "| server MiB | MiB per session | KiB per frame | all open after s | one more page, s | Pause p95, ms |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        lines = []
        for sessions in args.sessions:
            row = asyncio.run(classroom(url, pids, sessions, args.seconds, args.warmup, off_screen))
            per_session = (row["rss_mib"] - idle) / sessions
            errors = f" ({len(row['errors'])} failed: {row['errors'][0]})" if row["errors"] else ""
            print(f"| {sessions}{errors} | {row['fps_min']:.1f} / {row['fps_median']:.1f} | {row['steps_median']:.1f} "
                  f"| {row['cores']:.2f} | {row['rss_mib']:.0f} | {per_session:.0f} | {row['kib_per_frame']:.0f} "
                  f"| {row['open_s']:.1f} | {row['join_s']:.1f} | {row['click_ms_p95']:.0f} |", flush=True)
            lines.append(json.dumps({"sessions": sessions, "procs": args.procs, "fps_min": round(row["fps_min"], 2),
                                     "fps_median": round(row["fps_median"], 2),
                                     "steps_per_s_median": round(row["steps_median"], 1),
                                     "cores_busy": round(row["cores"], 2), "mib_per_session": round(per_session, 1),
                                     "join_s": round(row["join_s"], 2), "click_ms_p95": round(row["click_ms_p95"], 1)}))
            time.sleep(8)  # closed sessions are destroyed and their threads joined
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    for line in lines:  # one JSON line per N, last
        print(line)


if __name__ == "__main__":
    main()
