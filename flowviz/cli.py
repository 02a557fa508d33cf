"""The headless command line: `flowviz train PRESET.json` and `flowviz check PRESET.json`.

    flowviz train presets/spline-8gaussians.json --steps 500 --out runs/a
    flowviz check presets/*.json

`train` prints progress to stderr and ends with one JSON line of final metrics on stdout. With
--out it writes metrics.csv, views.png (the per-layer views), model.pt (weights and spec) and
spec.json. Exit status: 0 done, 1 training diverged, 2 bad preset or arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from flowviz.core.checkpoint import save_model
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Evaluation, Trainer, TrainingDiverged


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowviz", description="Train and check flowviz experiments headless.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a preset and report final metrics as one JSON line")
    train.add_argument("preset", type=Path)
    train.add_argument("--steps", type=int, help="steps to train (default: the preset's training.steps)")
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    train.add_argument("--out", type=Path, help="folder for metrics.csv, views.png, model.pt and spec.json")
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    check = commands.add_parser("check", help="validate presets")
    check.add_argument("presets", type=Path, nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.presets)
    return _train(args)


def _check(paths: list[Path]) -> int:
    status = 0
    for path in paths:
        try:
            spec = ExperimentSpec.load(path)
        except SpecError as error:
            print(f"{path}: invalid: {error}", file=sys.stderr)
            status = 2
        else:
            print(f"{path}: ok ({spec.title}; {len(spec.layers)} layers, target {spec.target.name})")
    return status


def _train(args: argparse.Namespace) -> int:
    try:
        spec = ExperimentSpec.load(args.preset)
        if args.steps is not None:
            spec = spec.replace(training={"steps": args.steps})
        trainer = Trainer(spec, device=args.device)
    except ValueError as error:  # SpecError included: a bad preset, a bad device
        print(f"flowviz: {args.preset}: {error}", file=sys.stderr)
        return 2
    total = spec.training["steps"]
    rows: list[dict] = []

    def progress(step: int, loss: float, evaluation: Evaluation | None) -> None:
        row = {"step": step, "loss": loss, "test_nll": "", "kl": ""}
        if evaluation is not None:
            row.update(test_nll=evaluation.test_nll, kl="" if evaluation.kl is None else evaluation.kl)
            if not args.quiet:
                kl = "" if evaluation.kl is None else f"  KL {evaluation.kl:.4f} nats"
                print(f"step {step}/{total}  loss {loss:.4f}  test NLL {evaluation.test_nll:.4f} nats{kl}", file=sys.stderr)
        rows.append(row)

    try:
        metrics = trainer.run(total, progress)
    except TrainingDiverged as error:
        print(f"flowviz: {error}", file=sys.stderr)
        print(json.dumps({"steps": trainer.step_count, "error": str(error)}))
        return 1
    if args.out is not None:
        _write_outputs(args.out, trainer, spec, rows, metrics)
    print(json.dumps(metrics))
    return 0


def _write_outputs(out: Path, trainer: Trainer, spec: ExperimentSpec, rows: list[dict], metrics: dict) -> None:
    from flowviz.figures import render_flow  # matplotlib only when a figure is asked for

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "loss", "test_nll", "kl"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    spec.save(out / "spec.json")
    save_model(out / "model.pt", trainer.flow, spec, trainer.step_count)
    render_flow(trainer.flow, trainer.target, spec, out / "views.png")


if __name__ == "__main__":
    sys.exit(main())
