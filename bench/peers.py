"""Training throughput and fit against zuko, normflows and nflows, in one run.

    pip install -e '.[bench]' && python bench/peers.py [--steps 1000] [--repeats 1] [--race 60] [--architectures nsf]

Same architectures (RealNVP: 8 affine couplings with MLP(64, 64); NSF: 4 rational-quadratic spline
couplings with MLP(64, 64), 8 bins, tails at ±5), same data stream, batch 512, Adam 1e-3. Fit is the
true KL(p‖q) in nats on 4096 held-out points, with the exact target density. Steps/s counts the
training steps after 10 untimed warm-up steps (which hold torch.compile's compile), data sampling
included for everyone; the libraries take turns of 50 steps, so the machine's drift hits all alike. flowviz runs twice: eager, and with `Trainer(compile=True)`
(`flowviz train --compile`). Prints markdown tables; ratios are against the fastest peer in this run.

The race (`--race S`): every library trains each architecture on checkerboard for S CPU-seconds of
this process (time.process_time: all threads; compiling counts), then its KL is measured.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from flowviz.core.spec import ExperimentSpec
from flowviz.core.targets import TARGETS
from flowviz.core.training import Trainer

BATCH, LR, HIDDEN = 512, 1e-3, 64


def flowviz_trainer(arch: str, target: str, seed: int, compile: bool = False) -> Trainer:
    """flowviz runs through `Trainer.step`, the path the app and CLI use, with its finiteness
    guard and snapshot included."""
    kind, count = ("affine_coupling", 8) if arch == "realnvp" else ("spline_coupling", 4)
    layers = [{"type": kind, "settings": {"transformed": "z2" if i % 2 == 0 else "z1", "hidden": HIDDEN, "depth": 2}}
              for i in range(count)]
    return Trainer(ExperimentSpec.from_dict({"seed": seed, "layers": layers, "target": {"name": target},
                                             "training": {"learning_rate": LR, "batch_size": BATCH}}), compile=compile)


def zuko_model(arch: str):
    import zuko

    if arch == "realnvp":
        flow = zuko.flows.RealNVP(2, transforms=8, hidden_features=(HIDDEN, HIDDEN))
    else:
        flow = zuko.flows.NSF(2, transforms=4, bins=8, passes=2, hidden_features=(HIDDEN, HIDDEN))
    return flow, lambda x: flow().log_prob(x)


def normflows_model(arch: str):
    import normflows as nf

    flows = []
    if arch == "realnvp":
        for _ in range(8):
            flows += [nf.flows.AffineCouplingBlock(nf.nets.MLP([1, HIDDEN, HIDDEN, 2], init_zeros=True)),
                      nf.flows.Permute(2, mode="swap")]
    else:
        for _ in range(4):
            flows += [nf.flows.CoupledRationalQuadraticSpline(2, 1, HIDDEN, num_bins=8, tail_bound=5.0),
                      nf.flows.Permute(2, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    return model, model.log_prob


def nflows_model(arch: str):
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import (
        AffineCouplingTransform,
        CompositeTransform,
        PiecewiseRationalQuadraticCouplingTransform,
    )

    class Net(MLP):  # nflows' couplings pass a context argument its MLP does not take
        def forward(self, inputs, context=None):
            return super().forward(inputs)

    def net(inputs: int, outputs: int) -> nn.Module:
        return Net([inputs], [outputs], hidden_sizes=[HIDDEN, HIDDEN])

    transforms = []
    for i in range(8 if arch == "realnvp" else 4):
        mask = torch.tensor([1, 0] if i % 2 == 0 else [0, 1])
        if arch == "realnvp":
            transforms.append(AffineCouplingTransform(mask, net))
        else:
            transforms.append(PiecewiseRationalQuadraticCouplingTransform(mask, net, num_bins=8, tails="linear", tail_bound=5.0))
    flow = Flow(CompositeTransform(transforms), StandardNormal([2]))
    return flow, flow.log_prob


FLOWVIZ = ("flowviz", "flowviz compiled")
PEERS = {"zuko": zuko_model, "normflows": normflows_model, "nflows": nflows_model}
LIBRARIES = [*FLOWVIZ, *PEERS]
WARMUP = 10
CHUNK = 50  # steps each library takes in its turn (`run_together`)


def stepper(library: str, arch: str, target, seed: int):
    """(model, its log-density, one training step). Every library draws each batch from the same
    sampler inside the step."""
    torch.manual_seed(seed)
    if library in FLOWVIZ:
        trainer = flowviz_trainer(arch, target.info.name, seed, compile=library == "flowviz compiled")
        return trainer.flow, trainer.flow.log_prob, trainer.step
    model, log_prob = PEERS[library](arch)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()

    def step() -> None:
        loss = -log_prob(target.sample(BATCH, generator)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return model, log_prob, step


def kl_of(model, log_prob, target, seed: int) -> float:
    model.eval()
    test = target.held_out(4096, seed)
    with torch.no_grad():
        return float((target.log_prob(test) - log_prob(test)).mean())


def run_together(libraries: list[str], arch: str, target_name: str, steps: int, seed: int,
                 ) -> dict[str, tuple[float, float, float]]:
    """Per library: (steps/s after the warm-up, KL after `steps` steps, seconds the warm-up took),
    the libraries trained at once, taking turns of CHUNK steps, so the machine's drift
    (2x within minutes here) falls on all of them alike: run one after another, 1000 steps each,
    the ratios moved by up to 0.3 between runs of the same code."""
    target = TARGETS[target_name]()
    models, warmups, seconds = {}, {}, dict.fromkeys(libraries, 0.0)
    for library in libraries:
        start = time.perf_counter()
        models[library] = stepper(library, arch, target, seed)
        for _ in range(WARMUP):
            models[library][2]()
        warmups[library] = time.perf_counter() - start
    for done in range(0, steps - WARMUP, CHUNK):
        for library in libraries:
            step = models[library][2]
            start = time.perf_counter()
            for _ in range(min(CHUNK, steps - WARMUP - done)):
                step()
            seconds[library] += time.perf_counter() - start
    return {library: ((steps - WARMUP) / seconds[library], kl_of(*models[library][:2], target, seed), warmups[library])
            for library in libraries}


def race(library: str, arch: str, cpu_seconds: float, seed: int = 0) -> tuple[int, float]:
    """Steps done and KL(p‖q) on checkerboard after `cpu_seconds` of this process's CPU time,
    building (and compiling) the model included."""
    target = TARGETS["checkerboard"]()
    start = time.process_time()
    model, log_prob, step = stepper(library, arch, target, seed)
    steps = 0
    while time.process_time() - start < cpu_seconds:
        step()
        steps += 1
    return steps, kl_of(model, log_prob, target, seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--libraries", nargs="+", default=LIBRARIES, choices=LIBRARIES)
    parser.add_argument("--architectures", nargs="+", default=["realnvp", "nsf"], choices=["realnvp", "nsf"])
    parser.add_argument("--race", type=float, default=0, help="CPU-seconds per library for the checkerboard race (0: none)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, batch {BATCH}, "
          f"medians over seeds 0..{args.repeats - 1}\n")
    print("| architecture | target | library | steps/s | × fastest peer | KL(p‖q) nats | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.architectures:
        for target in ("8gaussians", "checkerboard"):
            results = {}
            for repeat in range(args.repeats):
                for library, result in run_together(args.libraries, arch, target, args.steps, repeat).items():
                    results.setdefault(library, []).append(result)
            medians = {lib: [statistics.median(column) for column in zip(*r)] for lib, r in results.items()}
            peers = [speed for lib, (speed, _, _) in medians.items() if lib in PEERS]
            fastest = max(peers) if peers else math.nan
            for library, (speed, kl, warmup) in medians.items():
                print(f"| {arch} | {target} | {library} | {speed:.1f} | {speed / fastest:.2f} | {kl:.3f} | {warmup:.1f} |",
                      flush=True)
    if args.race:
        print(f"\nCheckerboard race: {args.race:g} CPU-seconds each (compiling included), seed 0\n")
        print("| architecture | library | steps | KL(p‖q) nats |")
        print("|---|---|---|---|")
        for arch in args.architectures:
            for library in args.libraries:
                steps, kl = race(library, arch, args.race)
                print(f"| {arch} | {library} | {steps} | {kl:.3f} |", flush=True)


if __name__ == "__main__":
    main()
