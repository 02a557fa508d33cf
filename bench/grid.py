"""Milliseconds for one grid evaluation (every depth's views) of a RealNVP flow, depth by depth.

    python bench/grid.py [--repeats 15] [--device cpu]

The flow is K affine couplings with MLP(64, 64), K = 1..8, weights perturbed so no layer is the
identity; 1000 base samples and the warped base grid are included, as in a frame of the app. A
flow of depth K has K + 1 views (q_0..q_K and their log-dets), so the row for K = 8 is what one
full frame of an 8-layer flow costs. Runs at 1 torch thread (what the app gives each process) and
at torch's default; reports the median and the best of `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowviz.core.build import build_flow
from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.spec import ExperimentSpec

DEPTHS = range(1, 9)
RESOLUTIONS = (128, 256)


def realnvp(depth: int, device: str):
    layers = [{"type": "affine_coupling", "settings": {"transformed": "z2" if i % 2 == 0 else "z1"}} for i in range(depth)]
    flow = build_flow(ExperimentSpec.from_dict({"layers": layers})).to(device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


def timed(flow, request: GridRequest, samples: torch.Tensor, repeats: int, device: str) -> list[float]:
    evaluate_grid(flow, request, samples)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_grid(flow, request, samples)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    flows = {depth: realnvp(depth, args.device) for depth in DEPTHS}
    samples = torch.randn(1000, 2)
    thread_counts = [1, torch.get_num_threads()] if args.device == "cpu" and torch.get_num_threads() > 1 else [torch.get_num_threads()]
    print(f"torch {torch.__version__}, device {args.device}, median (best) ms of {args.repeats} runs\n")
    columns = [(r, t) for r in RESOLUTIONS for t in thread_counts]
    print("| depth K | " + " | ".join(f"{r}², {t} thread{'s' * (t > 1)}" for r, t in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for depth, flow in flows.items():
        cells = []
        for resolution, threads in columns:
            torch.set_num_threads(threads)
            times = timed(flow, GridRequest(resolution=resolution), samples, args.repeats, args.device)
            cells.append(f"{statistics.median(times):.1f} ({min(times):.1f})")
        print(f"| {depth} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
