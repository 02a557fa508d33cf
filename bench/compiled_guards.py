"""The compiled model call of a Trainer step with Dynamo's guard check once per batch shape
(`CompiledOnce`, what the Trainer does since 2026-12-03) against the check before every call (plain
`torch.compile`, what it did before).

    pip install -e '.[bench]' && python bench/compiled_guards.py [--architecture realnvp] [--rounds 30]

One thread, one process: the two take turns of 50 calls of the flow's log-density on a batch of 512
(the call a forward-KL step compiles, building the autograd graph as training does), in alternating
order, after warm-up calls that hold the compiling. Whole steps differ by less than their noise
(turns of whole steps gave 0.92-1.13x in runs of the same code), so this times the call itself; a
whole compiled step's time is printed for scale. Ends with one JSON line:
{"architecture", "ms_once", "ms_every_call", "saved_ms", "step_ms"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from peers import flowviz_trainer

from flowviz.core.training import CompiledOnce

TURN = 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture", default="realnvp", choices=["realnvp", "nsf"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = flowviz_trainer(args.architecture, "8gaussians", 0, compile=True)
    calls = {"once": CompiledOnce(trainer.flow.log_prob),
             "every_call": torch.compile(trainer.flow.log_prob, dynamic=False)}
    x = trainer.target.sample(512, torch.Generator().manual_seed(0))
    for call in calls.values():
        for _ in range(5):
            call(x).mean().backward()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(args.rounds):
        for name in (("once", "every_call") if round_ % 2 else ("every_call", "once")):
            start = time.perf_counter()
            for _ in range(TURN):
                calls[name](x)
            times[name].append((time.perf_counter() - start) / TURN * 1e3)
    for _ in range(12):
        trainer.step()
    start = time.perf_counter()
    for _ in range(100):
        trainer.step()
    step_ms = (time.perf_counter() - start) / 100 * 1e3
    once, every_call = (statistics.median(times[name]) for name in ("once", "every_call"))
    print(f"a compiled call: {once:.3f} ms with the guard check once per shape, {every_call:.3f} ms with it "
          f"every call; a whole compiled step {step_ms:.2f} ms")
    print(json.dumps({"architecture": args.architecture, "ms_once": round(once, 4), "ms_every_call": round(every_call, 4),
                      "saved_ms": round(every_call - once, 4), "step_ms": round(step_ms, 3)}))


if __name__ == "__main__":
    main()
