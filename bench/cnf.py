"""A continuous flow trained by likelihood against the same flow by flow matching (independent and
optimal-transport pairs), for equal CPU time; how straight each one's paths are; and what one live
frame of it costs.

    python bench/cnf.py --target moons --seconds 40

Each run trains one `cnf` layer (the preset cnf-moons' settings unless told otherwise) on one
thread for `--seconds` of process CPU time and reports the held-out KL(p‖q) of the solved map at a
quarter, half and all of it. Straightness is |x(1) - x(0)| over the length of the solver's path,
averaged over 512 base points (1: straight lines). The last line is one JSON object:
`kl_likelihood`, `kl_flow_matching`, `kl_flow_matching_ot`, `straightness_independent`,
`straightness_ot`, `live_model_ms` (ln q on the 96² model view), `live_strips_ms` (every depth at 64²,
resampled, with 1000 samples and their paths) and `live_frames_per_s` (one frame of both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowviz.core.grid import GridRequest, evaluate_grid, output_log_prob
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer


def spec_for(args, objective: str, pairing: str = "independent") -> ExperimentSpec:
    layer = {"type": "cnf", "settings": {"solver": args.solver, "steps": args.steps, "hidden": args.hidden,
                                         "depth": 2, "contraction": args.contraction}}
    batch = 256 if objective == "forward_kl" else 512
    return ExperimentSpec.from_dict({"seed": args.seed, "target": {"name": args.target}, "layers": [layer],
                                     "training": {"objective": objective, "pairing": pairing, "learning_rate": 3e-3,
                                                  "batch_size": batch, "test_size": 4096}})


def train_for(spec: ExperimentSpec, seconds: float) -> tuple[Trainer, list[tuple[float, int, float]]]:
    trainer = Trainer(spec)
    spent, curve, marks = 0.0, [], [seconds / 4, seconds / 2, seconds]
    while marks:
        start = time.process_time()
        for _ in range(10):
            trainer.step()
        spent += time.process_time() - start
        if spent >= marks[0]:
            marks.pop(0)
            curve.append((round(spent, 1), trainer.step_count, round(trainer.evaluate().kl, 4)))
    return trainer, curve


@torch.no_grad()
def straightness(trainer: Trainer) -> float:
    (_, cnf), = trainer.flow.active()
    z = trainer.flow.base.sample(512, torch.Generator().manual_seed(1))
    path = cnf.paths(z)
    length = (path[1:] - path[:-1]).norm(dim=-1).sum(0)
    return float(((path[-1] - path[0]).norm(dim=-1) / length.clamp_min(1e-12)).mean())


def live_cost(trainer: Trainer, repeats: int = 3) -> tuple[float, float]:
    flow = trainer.flow.eval()
    noise = flow.base.sample(1000, torch.Generator().manual_seed(2))
    model = GridRequest(resolution=96)
    strips = GridRequest(resolution=64, grid_lines=13, line_points=33)

    def best(run) -> float:
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    return (best(lambda: output_log_prob(flow, model)),
            best(lambda: evaluate_grid(flow.unfolded(4), strips, noise, exact=False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="moons")
    parser.add_argument("--seconds", type=float, default=40.0, help="CPU seconds of training per run")
    parser.add_argument("--solver", default="euler", choices=("euler", "rk4"))
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--contraction", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, objective, pairing in (("likelihood", "forward_kl", "independent"),
                                     ("flow_matching", "flow_matching", "independent"),
                                     ("flow_matching_ot", "flow_matching", "optimal_transport")):
        trainer, curve = train_for(spec_for(args, objective, pairing), args.seconds)
        results[name] = trainer
        print(f"{name:17s} (CPU s, steps, KL): {curve}", flush=True)
        results[f"kl_{name}"] = curve[-1][2]
    straight = {"independent": straightness(results["flow_matching"]), "ot": straightness(results["flow_matching_ot"])}
    print(f"straightness of the paths: independent pairs {straight['independent']:.4f}, OT pairs {straight['ot']:.4f}")
    model_ms, strips_ms = live_cost(results["likelihood"])
    print(f"one live frame ({args.solver} × {args.steps}, hidden {args.hidden}, one thread): model view 96² "
          f"{model_ms:.0f} ms, strips 64² with time slices {strips_ms:.0f} ms")
    print(json.dumps({"target": args.target, "cpu_seconds": args.seconds, "solver": args.solver, "steps": args.steps,
                      "kl_likelihood": results["kl_likelihood"], "kl_flow_matching": results["kl_flow_matching"],
                      "kl_flow_matching_ot": results["kl_flow_matching_ot"],
                      "straightness_independent": round(straight["independent"], 4),
                      "straightness_ot": round(straight["ot"], 4), "live_model_ms": round(model_ms, 1),
                      "live_strips_ms": round(strips_ms, 1),
                      "live_frames_per_s": round(1000 / (model_ms + strips_ms), 2)}))


if __name__ == "__main__":
    main()
