"""Train every preset through the CLI and tabulate what each reaches, and how fast.

    python bench/presets.py [--only GLOB] [--out FILE]

Each preset runs as `python -m flowviz train PRESET --quiet` in its own process, one at a time, so
the wall time is what a user waits for (interpreter start and import included). The first table
lists every preset: its layers, base, target, objective, steps, wall seconds, training steps per
second (the CLI's own figure, evaluations excluded) and the final true KL in nats with its
direction, or the held-out NLL where the target's density is unknown. The second table is Rezende &
Mohamed's Figure 3 as numbers: the reverse KL that planar flows of length K = 2, 8 and 32 reach on
U1–U4 (`presets/planar-u{1,2,3,4}-k{2,8,32}.json`). With --out the same markdown is also written
to FILE. `--only` takes a glob on the preset's file name without `.json` (e.g. `--only 'planar-*'`).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "presets"
PLANAR = re.compile(r"planar-(u[1-4])-k(\d+)$")
GRID_KS = (2, 8, 32)
GRID_TARGETS = ("u1", "u2", "u3", "u4")


def train(path: Path) -> tuple[dict | None, float, str]:
    """Run the CLI on one preset: (final metrics or None, wall seconds, error text)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flowviz", "train", str(path), "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    try:
        metrics = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        metrics = None
    if result.returncode != 0 or metrics is None or "error" in metrics:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        return None, wall, f"failed (exit {result.returncode}): {reason[0]}"
    return metrics, wall, ""


def layer_summary(layers: list[dict]) -> str:
    counts = Counter(layer["type"] for layer in layers)  # first-seen order
    parts = [f"{name} ×{n}" if n > 1 else name for name, n in counts.items()]
    return f"{len(layers)}: " + ", ".join(parts) if layers else "0"


def base_summary(base: dict) -> str:
    name = base.get("name", "standard_normal")
    return name + (" (learnable)" if base.get("learnable") else "")


def fit_summary(metrics: dict) -> str:
    if metrics.get("kl") is not None:
        return f"KL({'p‖q' if metrics['kl_direction'] == 'p||q' else 'q‖p'}) {metrics['kl']:.3f}"
    if metrics.get("test_nll") is not None:
        return f"test NLL {metrics['test_nll']:.3f}"
    return "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="*", help="glob on preset names (file name without .json)")
    parser.add_argument("--out", type=Path, help="also write the markdown tables to this file")
    args = parser.parse_args()

    paths = [p for p in sorted(PRESETS.glob("*.json")) if fnmatch.fnmatch(p.stem, args.only)]
    if not paths:
        print(f"no preset matches {args.only!r}", file=sys.stderr)
        return 2
    import torch  # only for the header line

    rows, grid, failures = [], {}, 0
    for i, path in enumerate(paths, 1):
        spec = json.loads(path.read_text())
        training = spec.get("training", {})
        print(f"[{i}/{len(paths)}] {path.stem} ...", end=" ", file=sys.stderr, flush=True)
        metrics, wall, error = train(path)
        failures += bool(error)
        print(error or f"{wall:.1f} s, {fit_summary(metrics)}", file=sys.stderr, flush=True)
        rows.append([
            path.stem, layer_summary(spec.get("layers", [])), base_summary(spec.get("base", {})),
            spec.get("target", {}).get("name", "8gaussians"), training.get("objective", "forward_kl"),
            str(metrics["steps"] if metrics else training.get("steps", 2000)), f"{wall:.1f}",
            f"{metrics['steps_per_s']:.0f}" if metrics and metrics.get("steps_per_s") else "–",
            fit_summary(metrics) if metrics else error,
        ])
        match = PLANAR.match(path.stem)
        if match and metrics and metrics.get("kl") is not None:
            grid[match[1], int(match[2])] = metrics["kl"]

    lines = [
        (f"Presets trained by `python -m flowviz train PRESET --quiet`, one at a time, on {date.today()}: "
         f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
         f"{torch.get_num_threads()} threads, device cpu. Wall: the whole command; steps/s: training steps only. "
         "Final fit in nats: the true KL on the held-out points (forward, p‖q) or on samples of q (reverse, q‖p), "
         "4096 of them; where p is unknown, the NLL of the held-out points."),
        "",
        "| preset | layers | base | target | objective | steps | wall s | steps/s | final fit (nats) |",
        "|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    if grid:
        lines += [
            "",
            ("Planar flows by reverse KL: KL(q‖p) in nats after each preset's steps "
             "(Rezende & Mohamed 2015, Figure 3):"),
            "",
            "| energy | " + " | ".join(f"K = {k}" for k in GRID_KS) + " |",
            "|---|" + "---|" * len(GRID_KS),
            *(f"| {u.upper()} | " + " | ".join(f"{grid[u, k]:.3f}" if (u, k) in grid else "–" for k in GRID_KS) + " |"
              for u in GRID_TARGETS),
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
