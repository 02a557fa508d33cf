"""A training step with the weights as one vector (`flatten`) against the same step per tensor.

    pip install -e '.[bench]' && python bench/flat_step.py [--architecture realnvp] [--compile] [--rounds 15]

Three trainers in one process take turns of 40 steps (so the machine's drift hits all alike): the
Trainer as it is, the Trainer with its parameters left as separate tensors (what it did before
2026-12-03: a cat for the snapshot, ~50-tensor fused Adam), and normflows' loop from
`bench/peers.py` for scale. Prints the median steps/s of each and ends with one JSON line:
{"architecture", "compiled", "one_vector", "per_tensor", "normflows", "gain"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from peers import flowviz_trainer, stepper

from flowviz.core import training

TURN = 40


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture", default="realnvp", choices=["realnvp", "nsf"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    flatten = training.flatten
    training.flatten = lambda parameters: None  # the Trainer then keeps its tensors apart, as before
    per_tensor = flowviz_trainer(args.architecture, "8gaussians", 0, compile=args.compile)
    training.flatten = flatten
    one_vector = flowviz_trainer(args.architecture, "8gaussians", 0, compile=args.compile)
    steps = {"one_vector": one_vector.step, "per_tensor": per_tensor.step,
             "normflows": stepper("normflows", args.architecture, one_vector.target, 0)[2]}
    for step in steps.values():
        for _ in range(10):  # compiling, when asked, happens here
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(TURN):
                step()
            rates[name].append(TURN / (time.perf_counter() - start))
    medians = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"{name}: {value} steps/s")
    print(json.dumps({"architecture": args.architecture, "compiled": args.compile, **medians,
                      "gain": round(medians["one_vector"] / medians["per_tensor"], 3)}))


if __name__ == "__main__":
    main()
