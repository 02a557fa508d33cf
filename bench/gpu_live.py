"""A live session on a CUDA device: train and render frames for a while, then check that a frame
drawn on the device matches the same model's frame drawn on the CPU.

    python bench/gpu_live.py [--device cuda] [--preset realnvp-moons] [--seconds 10]

Ends with one JSON line: `device`, `steps_per_s`, `frames_per_s`, `render_ms` (a live frame),
`max_log_q_error` (exact frame, device against CPU, nats, where both are finite) and `ok`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.live import LiveSession

PRESETS = Path(__file__).resolve().parent.parent / "presets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    spec = ExperimentSpec.load(PRESETS / f"{args.preset}.json")
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
    both = np.isfinite(on_device) & np.isfinite(on_cpu)
    error = float(np.abs(on_device[both] - on_cpu[both]).max()) if both.any() else float("nan")
    print(json.dumps({"device": args.device, "preset": args.preset, "steps": steps,
                      "steps_per_s": round(steps / elapsed, 1), "frames_per_s": round(frames / elapsed, 1),
                      "render_ms": round(render_ms, 1), "max_log_q_error": error,
                      "ok": bool(steps > 0 and frames > 0 and error < 1e-3 and session.error is None)}))


if __name__ == "__main__":
    main()
