"""Seconds for the first full (exact) render of the presets whose layers invert numerically, on one
thread, with the Newton solver against the 64-step bisection it replaced (same run), and how exact
the inverses are.

    python bench/inverses.py [--repeats 3]

A preset's first render is the exact chain at its resolution (128²): every depth's grid copy
inverted down to the base, K(K+1)/2 layer inversions (528 for planar K = 32). The round-trip
error is max |f(f⁻¹(x)) - x| over the 128² grid, every layer of every preset. Ends with one JSON
line: `planar_k32_render_s`, `planar_k32_render_s_bisection`, `sylvester_render_s`,
`iresnet_render_s`, `max_round_trip_error`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from flowviz.core.build import build_flow
from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.layers import residual
from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec

CASES = {"planar_k32": "planar-u1-k32", "sylvester": "sylvester-u4", "iresnet": "iresnet-u2"}


def bisection(target, c, k, d, iterations: int = 64):
    """The solver before issue 14: bisection on [t - |c|, t + |c|] in float64."""
    t, c, k, d = (a.double() for a in torch.broadcast_tensors(target, c, k, d))
    lo, hi = t - c.abs(), t + c.abs()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = mid + c * torch.tanh(k * mid + d) > t
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return (0.5 * (lo + hi)).to(target.dtype)


def render_seconds(flow, request: GridRequest, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_grid(flow, request)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def round_trip_error(flow, request: GridRequest) -> float:
    grid = request.points()
    worst = 0.0
    for _, layer in flow.active():
        z, _ = layer.inverse(grid)
        worst = max(worst, float((layer(z)[0] - grid).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats}\n")
    print("| preset | layers | render s (Newton) | render s (bisection) | max round trip |")
    print("|---|---|---|---|---|")
    result, errors = {}, []
    newton = residual.solve_tanh_equation
    for key, name in CASES.items():
        spec = ExperimentSpec.load(preset_path(name))
        flow = build_flow(spec).eval()
        request = GridRequest.from_view(spec.view)
        result[f"{key}_render_s"] = round(render_seconds(flow, request, args.repeats), 3)
        errors.append(round_trip_error(flow, request))
        before = "–"
        if key == "planar_k32":
            residual.solve_tanh_equation = bisection
            try:
                result["planar_k32_render_s_bisection"] = round(render_seconds(flow, request, 1), 3)
            finally:
                residual.solve_tanh_equation = newton
            before = result["planar_k32_render_s_bisection"]
        print(f"| {name} | {len(flow.active())} | {result[f'{key}_render_s']} | {before} | {errors[-1]:.1e} |", flush=True)
    result["max_round_trip_error"] = max(errors)
    print()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
