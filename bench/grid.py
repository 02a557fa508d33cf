"""Milliseconds for one full grid evaluation (every depth) of an 8-layer coupling flow.

    python bench/grid.py [--repeats 15]

RealNVP: 8 affine couplings with MLP(64, 64), weights perturbed so no layer is the identity;
1000 base samples and the warped base grid included. Reports the median and the best run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowviz.core.build import build_flow
from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.spec import ExperimentSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    layers = [{"type": "affine_coupling", "settings": {"transformed": "z2" if i % 2 == 0 else "z1"}} for i in range(8)]
    flow = build_flow(ExperimentSpec.from_dict({"layers": layers})).to(args.device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    samples = torch.randn(1000, 2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for resolution in (128, 256):
        request = GridRequest(resolution=resolution)
        evaluate_grid(flow, request, samples)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate_grid(flow, request, samples)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - start))
        print(f"{resolution}²: median {statistics.median(times):.1f} ms, best {min(times):.1f} ms ({args.repeats} runs)")


if __name__ == "__main__":
    main()
