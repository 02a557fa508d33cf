"""The command line: `flowviz serve` (the explorer) and, headless, `train`, `gif`, `check` and `presets`.

    flowviz serve spline-8gaussians --port 5006 --show                        # the explorer, from anywhere
    flowviz presets                                                           # the shipped presets by name
    flowviz train spline-8gaussians --steps 500 --out runs/a                  # a preset by name ...
    flowviz train my-experiment.json                                          # ... or by path
    flowviz gif realnvp-moons --out moons.gif                                 # the flow through depth
    flowviz gif realnvp-moons --kind training --every 25 --out t.gif
    flowviz check presets/*.json

`serve` runs `panel serve` on the installed app (`python -m flowviz serve` does the same), passing on
the options it does not know itself (`--use-xheaders`, ...); a page opens PRESET (default
realnvp-moons) unless its link names another experiment.

`train` shows progress on stderr (a bar with steps/s and the time left on a terminal, a line per
evaluation when stderr is a file or a pipe) and ends with one JSON line of final metrics on stdout. With
--out it writes metrics.csv, views.png (the per-layer views), model.pt (weights and spec),
samples.csv (2000 samples of the model, header x,y) and spec.json.

`gif` trains the same way, then writes an animated GIF (default: PRESET-KIND.gif in the current
folder): `--kind depth` (the default) shows the trained flow layer by layer, samples gliding from
z_k to z_{k+1} over the density q_k; `--kind training` shows the model density and its samples
every --every steps (default: about 60 frames), with the step and the loss. Its JSON line adds
`gif`, `frames` and `bytes`.

Exit status: 0 done, 1 training diverged, 2 bad preset or arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from flowviz.core.build import shown_flow
from flowviz.core.checkpoint import save_model
from flowviz.core.presets import preset_files, preset_path
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Evaluation, Trainer, TrainingDiverged

SAMPLES_CSV = 2000  # samples written to samples.csv by `train --out`
TRAINING_GIF_FRAMES = 60  # frames a training GIF aims for when --every is not given


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowviz", description="Serve the flowviz explorer, or train and check "
                                                                  "experiments headless.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the explorer in the browser (panel serve on the installed app; "
                                              "other panel serve options pass through)")
    serve.add_argument("preset", nargs="?", default=None,
                       help="the experiment a page opens with: a shipped preset's name or a preset file")
    serve.add_argument("--port", type=int, default=5006, help="port to listen on (default: 5006)")
    serve.add_argument("--address", default=None, help="address to listen on (default: all of this machine's)")
    serve.add_argument("--show", action="store_true", help="open the explorer in a browser")
    serve.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                       help="a host pages may come from besides localhost (repeat for more)")
    commands.add_parser("presets", help="list the shipped presets by name, with their titles")
    train = commands.add_parser("train", help="train a preset and report final metrics as one JSON line")
    _training_arguments(train)
    train.add_argument("--out", type=Path,
                       help="folder for metrics.csv, views.png, model.pt, samples.csv and spec.json")
    gif = commands.add_parser("gif", help="train a preset, then write an animated GIF of the flow through depth "
                                          "or of the training")
    _training_arguments(gif)
    gif.add_argument("--kind", choices=("depth", "training"), default="depth",
                     help="depth: the trained flow layer by layer (default); training: the model every --every steps")
    gif.add_argument("--every", type=int, help="steps between training frames (default: about 60 frames in all)")
    gif.add_argument("--out", type=Path, help="the GIF to write (default: PRESET-KIND.gif in the current folder)")
    check = commands.add_parser("check", help="validate presets")
    check.add_argument("presets", nargs="+", help="preset names or files")
    return parser


def _training_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("preset", help="a shipped preset's name (see `flowviz presets`) or a preset file")
    command.add_argument("--steps", type=int, help="steps to train (default: the preset's training.steps)")
    command.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    command.add_argument("--quiet", action="store_true", help="no progress lines")
    command.add_argument("--compile", action="store_true",
                         help="torch.compile the model: 1.3-2.7x the steps/s after a one-off compile of ~25 s (needs g++)")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":
        return _serve(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "presets":
        for name, (title, _path) in preset_files().items():
            print(f"{name:28} {title}")
        return 0
    if args.command == "check":
        return _check(args.presets)
    if args.command == "gif":
        return _gif(args)
    return _train(args)


def _serve(args: argparse.Namespace, extra: list[str]) -> int:
    """`panel serve` on the installed app; options flowviz does not know (--use-xheaders,
    --num-threads, ...) go to `panel serve` as they are."""
    from panel.command import main as panel_main  # Panel only when serving

    argv = ["panel", "serve", str(Path(__file__).resolve().parent / "app.py"), "--port", str(args.port)]
    if args.address is not None:
        argv += ["--address", args.address]
    for origin in args.allow_websocket_origin:
        argv += ["--allow-websocket-origin", origin]
    if args.show:
        argv.append("--show")
    argv += extra
    if args.preset is not None:
        try:
            path = preset_path(args.preset)
            ExperimentSpec.load(path)  # refused here, with its reason, rather than on every page
        except SpecError as error:
            print(f"flowviz: {args.preset}: {error}", file=sys.stderr)
            return 2
        argv += ["--args", str(path.resolve())]
    sys.argv = argv
    panel_main()
    return 0


def _check(names: list[str]) -> int:
    status = 0
    for path in names:
        try:
            spec = ExperimentSpec.load(preset_path(path))
        except SpecError as error:
            print(f"{path}: invalid: {error}", file=sys.stderr)
            status = 2
        else:
            print(f"{path}: ok ({spec.title}; {len(spec.layers)} layers, target {spec.target.name})")
    return status


def _setup(args: argparse.Namespace) -> tuple[ExperimentSpec, Trainer] | None:
    """The spec (with --steps) and its trainer; None, after a message, for a bad preset or device."""
    try:
        spec = ExperimentSpec.load(preset_path(args.preset))
        if args.steps is not None:
            spec = spec.replace(training={"steps": args.steps})
        trainer = Trainer(spec, device=args.device, compile=args.compile)
    except ValueError as error:  # SpecError included: a bad preset, a bad device
        print(f"flowviz: {args.preset}: {error}", file=sys.stderr)
        return None
    return spec, trainer


def _run(args: argparse.Namespace, trainer: Trainer, spec: ExperimentSpec, rows: list[dict],
         also=None) -> dict | None:
    """Train the spec's steps, showing progress unless --quiet and appending a metrics row per step;
    `also(step, loss)` runs after every step. None, after a message and a JSON line, if it diverged."""
    total = spec.training.steps
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm  # a terminal gets a bar: steps/s and the time left

        bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.2)

    def progress(step: int, loss: float, evaluation: Evaluation | None) -> None:
        row = {"step": step, "loss": loss, "test_nll": "", "kl": ""}
        if evaluation is not None:
            row.update(test_nll=evaluation.test_nll, kl="" if evaluation.kl is None else evaluation.kl)
            kl = "" if evaluation.kl is None else f"  KL {evaluation.kl:.4f} nats"
            if bar is not None:
                bar.set_postfix_str(f"loss {loss:.4f}  test NLL {evaluation.test_nll:.4f}{kl}", refresh=False)
            elif not args.quiet:
                print(f"step {step}/{total}  loss {loss:.4f}  test NLL {evaluation.test_nll:.4f} nats{kl}", file=sys.stderr)
        if bar is not None:
            bar.update(step - bar.n)
        rows.append(row)
        if also is not None:
            also(step, loss)

    try:
        return trainer.run(total, progress)
    except TrainingDiverged as error:
        if bar is not None:
            bar.close()
        print(f"flowviz: {error}", file=sys.stderr)
        print(json.dumps({"steps": trainer.step_count, "error": str(error)}))
        return None
    finally:
        if bar is not None:
            bar.close()


def _train(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if setup is None:
        return 2
    spec, trainer = setup
    rows: list[dict] = []
    metrics = _run(args, trainer, spec, rows)
    if metrics is None:
        return 1
    if args.out is not None:
        _write_outputs(args.out, trainer, spec, rows, metrics)
    print(json.dumps(metrics))
    return 0


def _gif(args: argparse.Namespace) -> int:
    if args.every is not None and args.every < 1:
        print(f"flowviz: --every: {args.every} is out of range; expected a positive number of steps", file=sys.stderr)
        return 2
    setup = _setup(args)
    if setup is None:
        return 2
    spec, trainer = setup
    # matplotlib only when a figure is asked for
    from flowviz.figures import TrainingRecorder, depth_frame_count, depth_gif

    total = spec.training.steps
    every = args.every if args.every is not None else max(1, math.ceil(total / TRAINING_GIF_FRAMES))
    recorder = TrainingRecorder(spec.view, title=spec.title, total_steps=total, seed=spec.seed,
                                resolution=min(spec.view.resolution, 128))

    def record(step: int, loss: float) -> None:
        if step % every == 0 or step == total:
            recent = trainer.losses[-every:]  # the mean loss since the last frame: less noisy than one step's
            recorder.record(trainer.flow, step, sum(recent) / len(recent))

    if args.kind == "training":
        recorder.record(trainer.flow, 0)  # the untrained model
    metrics = _run(args, trainer, spec, [], record if args.kind == "training" else None)
    if metrics is None:
        return 1
    if args.kind == "training":
        data, frames = recorder.gif(), len(recorder)
    else:
        data, frames = depth_gif(trainer.flow, spec), depth_frame_count(len(shown_flow(trainer.flow, spec).active()))
    out = args.out if args.out is not None else Path(f"{Path(args.preset).stem}-{args.kind}.gif")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except OSError as error:
        print(f"flowviz: --out: cannot write {out}: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**metrics, "gif": str(out), "frames": frames, "bytes": len(data)}))
    return 0


def _write_outputs(out: Path, trainer: Trainer, spec: ExperimentSpec, rows: list[dict], metrics: dict) -> None:
    from flowviz.figures import render_flow, samples_csv  # matplotlib only when a figure is asked for

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "loss", "test_nll", "kl"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    spec.save(out / "spec.json")
    save_model(out / "model.pt", trainer.flow, spec, trainer.step_count)
    (out / "samples.csv").write_bytes(samples_csv(trainer.flow, SAMPLES_CSV, spec.seed))
    render_flow(trainer.flow, trainer.target, spec, out / "views.png")


if __name__ == "__main__":
    sys.exit(main())
