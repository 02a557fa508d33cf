"""Training throughput and fit against zuko, normflows and nflows, in one run.

    pip install -e '.[bench]' && python bench/peers.py [--steps 1000] [--repeats 1]

Same architectures (RealNVP: 8 affine couplings with MLP(64, 64); NSF: 4 rational-quadratic spline
couplings with MLP(64, 64), 8 bins, tails at ±5), same data stream, batch 512, Adam 1e-3. Fit is the
true KL(p‖q) in nats on 4096 held-out points, with the exact target density. Steps/s counts the
training steps, data sampling included for everyone. Prints a markdown table; ratios are against the fastest peer in this run.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from flowviz.core.spec import ExperimentSpec
from flowviz.core.targets import TARGETS
from flowviz.core.training import Trainer

BATCH, LR, HIDDEN = 512, 1e-3, 64


def flowviz_trainer(arch: str, target: str, seed: int) -> Trainer:
    """flowviz runs through `Trainer.step`, the path the app and CLI use, with its finiteness
    guard and snapshot included."""
    kind, count = ("affine_coupling", 8) if arch == "realnvp" else ("spline_coupling", 4)
    layers = [{"type": kind, "settings": {"transformed": "z2" if i % 2 == 0 else "z1", "hidden": HIDDEN, "depth": 2}}
              for i in range(count)]
    return Trainer(ExperimentSpec.from_dict({"seed": seed, "layers": layers, "target": {"name": target},
                                             "training": {"learning_rate": LR, "batch_size": BATCH}}))


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
    from nflows.transforms import AffineCouplingTransform, CompositeTransform, PiecewiseRationalQuadraticCouplingTransform

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


LIBRARIES = {"flowviz": flowviz_trainer, "zuko": zuko_model, "normflows": normflows_model, "nflows": nflows_model}


def run(library: str, arch: str, target_name: str, steps: int, seed: int) -> tuple[float, float]:
    """Every library draws each batch from the same sampler inside the timed loop."""
    torch.manual_seed(seed)
    target = TARGETS[target_name]()
    test = target.held_out(4096, seed)
    if library == "flowviz":
        trainer = flowviz_trainer(arch, target_name, seed)
        model, log_prob = trainer.flow, trainer.flow.log_prob
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        seconds = time.perf_counter() - start
    else:
        model, log_prob = LIBRARIES[library](arch)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            loss = -log_prob(target.sample(BATCH, generator)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        kl = float((target.log_prob(test) - log_prob(test)).mean())
    return steps / seconds, kl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, batch {BATCH}\n")
    print("| architecture | target | library | steps/s | × fastest peer | KL(p‖q) nats |")
    print("|---|---|---|---|---|---|")
    for arch in ("realnvp", "nsf"):
        for target in ("8gaussians", "checkerboard"):
            results = {}
            for repeat in range(args.repeats):
                for library in args.libraries:  # interleaved, so drift on a shared machine hits all alike
                    speed, kl = run(library, arch, target, args.steps, seed=repeat)
                    results.setdefault(library, []).append((speed, kl))
            medians = {lib: (sorted(s for s, _ in r)[len(r) // 2], sorted(k for _, k in r)[len(r) // 2]) for lib, r in results.items()}
            peers = [s for lib, (s, _) in medians.items() if lib != "flowviz"]
            fastest = max(peers) if peers else math.nan
            for library, (speed, kl) in medians.items():
                print(f"| {arch} | {target} | {library} | {speed:.1f} | {speed / fastest:.2f} | {kl:.3f} |", flush=True)


if __name__ == "__main__":
    main()
