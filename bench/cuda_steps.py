"""Training steps/s on a device with the step as one CUDA graph against the eager step, in one process.

    python bench/cuda_steps.py [--device cuda] [--presets realnvp-moons spline-8gaussians glow-checkerboard planar-u1-k8] [--steps 500]

Per preset, two Trainers of the same spec and seed (`Trainer(spec, device)`, whose maximum-likelihood
steps are a CUDA graph where the layers allow it, and `cuda_graph=False`) take turns of 50 steps after
10 untimed ones (which hold the capture), so the machine's drift falls on both. Reports steps/s each,
whether the steps were a graph (and why not), and the largest difference between the two runs' losses
over the steps taken (the same kernels on the same batches: rounding apart, the same losses). Ends with
one JSON line: preset -> {graph_steps_per_s, eager_steps_per_s, speedup, as_graph, max_loss_rel_diff}.
"""

from __future__ import annotations

import argparse
import json
import time

from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer

WARMUP, TURN = 10, 50


def compare(preset: str, device: str, steps: int) -> dict:
    spec = ExperimentSpec.load(preset_path(preset))
    trainers = {"graph": Trainer(spec, device), "eager": Trainer(spec, device, cuda_graph=False)}
    losses = {name: [trainer.step() for _ in range(WARMUP)] for name, trainer in trainers.items()}
    seconds = dict.fromkeys(trainers, 0.0)
    for done in range(0, steps, TURN):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            losses[name] += [trainer.step() for _ in range(min(TURN, steps - done))]
            seconds[name] += time.perf_counter() - start
    graphed = trainers["graph"]
    # Chaos parts two runs after a few hundred steps (README, Training), so compare the first 50.
    differences = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses["graph"][:50], losses["eager"][:50])]
    result = {"graph_steps_per_s": round(steps / seconds["graph"], 1), "eager_steps_per_s": round(steps / seconds["eager"], 1),
              "as_graph": graphed.steps_as_graph, "max_loss_rel_diff": float(f"{max(differences):.2g}")}
    result["speedup"] = round(result["graph_steps_per_s"] / result["eager_steps_per_s"], 2)
    if not graphed.steps_as_graph:
        result["refused"] = (graphed.graph_refused[:160] if graphed.graph_refused else
                             "not a CUDA device" if not device.startswith("cuda") else f"trains by {graphed.objective}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--presets", nargs="+", default=["realnvp-moons", "spline-8gaussians", "glow-checkerboard", "planar-u1-k8"])
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    results = {}
    print("| preset | graph steps/s | eager steps/s | × | a graph? | largest loss difference (first 50 steps) |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        r = results[preset] = compare(preset, args.device, args.steps)
        print(f"| {preset} | {r['graph_steps_per_s']} | {r['eager_steps_per_s']} | {r['speedup']} | "
              f"{'yes' if r['as_graph'] else 'no: ' + r['refused']} | {r['max_loss_rel_diff']} |",
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
