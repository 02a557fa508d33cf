"""A live session on a CUDA device: train and render frames for a while, then check that a frame
drawn on the device matches the same model's frame drawn on the CPU.

    python bench/gpu_live.py [--device cuda] [--preset realnvp-moons] [--seconds 10]

Ends with one JSON line: `device`, `steps_per_s`, `frames_per_s`, `render_ms` (a live frame),
`max_log_q_error` (exact frame, device against CPU, nats, over the pixels within SEEN nats of the
frame's peak: what the colour scale shows), `relative_error_device` and `relative_error_cpu` (every
finite pixel, each float32 frame against the CPU's float64 one, |a - b| / max(1, |b|)) and `ok`.

The relative figures are the ones to read at the frame's edge: there a trained RealNVP's log q reaches
-2.5e6, where float32 itself is ~0.25 apart, and device and CPU were 45 nats apart (relative 2e-5) on
an H200, as the CPU's own float32 is from float64 (48.5 nats).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.live import LiveSession

SEEN = 50.0  # nats below the peak that the colour scale shows, and more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    spec = ExperimentSpec.load(preset_path(args.preset))
    session = LiveSession(spec, args.device)
    frames = 0
    try:
        session.play()
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            if session.take_frame() is not None:
                frames += 1
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        session.pause()
        steps = session.step
        render_ms = 1000 * session.render_seconds / max(session.frames_rendered, 1)
        flow = session.copy_flow()
    finally:
        session.close()
    request = GridRequest.from_view(spec.view)
    on_device = evaluate_grid(flow, request).log_q
    on_cpu = evaluate_grid(flow.to("cpu"), request).log_q
    torch.set_default_dtype(torch.float64)  # the grid's axes and points in float64 too
    try:
        exact = evaluate_grid(copy.deepcopy(flow).double(), request).log_q
    finally:
        torch.set_default_dtype(torch.float32)
    finite = np.isfinite(on_device) & np.isfinite(on_cpu) & np.isfinite(exact)
    seen = finite & (exact >= np.max(exact, where=finite, initial=-np.inf) - SEEN)
    error = float(np.abs(on_device[seen] - on_cpu[seen]).max()) if seen.any() else float("nan")
    scale = np.maximum(1.0, np.abs(exact[finite]))
    relative = {name: float((np.abs(frame[finite] - exact[finite]) / scale).max()) if finite.any() else float("nan")
                for name, frame in (("device", on_device), ("cpu", on_cpu))}
    print(json.dumps({"device": args.device, "preset": args.preset, "steps": steps,
                      "steps_per_s": round(steps / elapsed, 1), "frames_per_s": round(frames / elapsed, 1),
                      "render_ms": round(render_ms, 1), "max_log_q_error": error,
                      "relative_error_device": relative["device"], "relative_error_cpu": relative["cpu"],
                      # the device as exact as the CPU: within 10x the CPU's own float32 error (or 1e-6)
                      "ok": bool(steps > 0 and frames > 0 and error < 1e-3 and session.error is None
                                 and relative["device"] <= max(10 * relative["cpu"], 1e-6))}))


if __name__ == "__main__":
    main()
