"""Every benchmark, one after another, into docs/benchmarks.md.

    pip install -e '.[bench]' && python bench/all.py [--quick] [--out docs/benchmarks.md]

Each section is one script's markdown table under the exact command that produced it, so any figure
can be measured again on its own. The scripts run one at a time: on a small machine two timing runs
side by side would measure each other. `--quick` runs every script briefly (a smoke test of the
harness, not figures to quote). A full run takes about 32 minutes on a 2-core CPU (the soak, 30 minutes on its own, is not in it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = [
    ("Training against zuko, normflows and nflows",
     ["bench/peers.py", "--steps", "1000", "--repeats", "3", "--race", "60"],
     ["bench/peers.py", "--steps", "60", "--repeats", "1", "--race", "3"]),
    ("Grid evaluation, depth by depth",
     ["bench/grid.py", "--repeats", "15"],
     ["bench/grid.py", "--repeats", "2"]),
    ("Numerical inverses: the first render of planar K = 32, Sylvester and i-ResNet",
     ["bench/inverses.py", "--repeats", "3"],
     ["bench/inverses.py", "--repeats", "1"]),
    ("A continuous flow by likelihood and by flow matching, for equal CPU time; its live frame",
     ["bench/cnf.py", "--target", "moons", "--seconds", "40"],
     ["bench/cnf.py", "--target", "moons", "--seconds", "2"]),
    ("The explorer in a browser",
     ["bench/app_rate.py", "--preset", "realnvp-moons", "--seconds", "20"],
     ["bench/app_rate.py", "--preset", "realnvp-moons", "--seconds", "3", "--warmup", "2"]),
    ("The server alone",
     ["bench/app_rate.py", "--preset", "realnvp-moons", "--seconds", "20", "--no-browser"],
     ["bench/app_rate.py", "--preset", "realnvp-moons", "--seconds", "3", "--warmup", "2", "--no-browser"]),
    ("A classroom on one server process",
     ["bench/classroom.py", "--sessions", "1", "10", "30", "--preset", "realnvp-moons"],
     ["bench/classroom.py", "--sessions", "2", "--seconds", "3", "--warmup", "2", "--preset", "realnvp-moons"]),
    ("A classroom on two server processes behind nginx",
     ["bench/classroom.py", "--sessions", "10", "30", "--procs", "2", "--preset", "realnvp-moons"],
     ["bench/classroom.py", "--sessions", "2", "--seconds", "3", "--warmup", "2", "--procs", "2", "--preset", "realnvp-moons"]),
    ("Cold start",
     ["bench/coldstart.py", "--repeats", "3"],
     ["bench/coldstart.py", "--repeats", "1"]),
    ("Failover: a backend behind nginx killed while its pages train",
     ["bench/failover.py", "--pages", "4", "--seconds", "15"],
     ["bench/failover.py", "--pages", "2", "--seconds", "4"]),
    ("Deep fuzzing of every parser of user input",
     ["bench/fuzz.py", "--examples", "10000"],
     ["bench/fuzz.py", "--examples", "100"]),
]
CUDA = [("Grid evaluation on CUDA", ["bench/grid.py", "--device", "cuda", "--repeats", "15"]),
        ("Training on CUDA (the CLI's JSON line)", ["-m", "flowviz", "train", "presets/realnvp-moons.json", "--device", "cuda", "--quiet"]),
        ("A live session on CUDA", ["bench/gpu_live.py", "--device", "cuda", "--seconds", "10"])]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    model = names[0] if names else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"{model}, {os.cpu_count()} cores; {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def measured_on_a_gpu(out: Path) -> str | None:
    """The CUDA section that a GPU machine's `bench/gpu_check.sh` run put in `out` (the last section),
    which a run on a machine without one keeps as it is."""
    text = out.read_text() if out.exists() else ""
    start = text.find("\n## CUDA\n")
    return text[start + 1:] if start >= 0 and "by `bash bench/gpu_check.sh` on" in text[start:] else None


def run(command: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, check=False)
    out = done.stdout.strip()
    if done.returncode != 0:
        out += f"\n\n(exit {done.returncode}; the end of its stderr:)\n\n" + "\n".join(
            "    " + line for line in done.stderr.strip().splitlines()[-15:])
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script briefly: a smoke test of the harness")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    parts = [
        "# Benchmarks\n",
        (f"Written by `python bench/all.py{' --quick' if args.quick else ''}` on {datetime.date.today()}: {machine()}. "
         "Each table is the output of the command above it. Timings on a shared machine drift; compare the "
         "figures within a table, which were measured in the same run.\n"),
    ]
    sections = [(title, quick if args.quick else full) for title, full, quick in SECTIONS]
    gpu_figures = measured_on_a_gpu(args.out)  # read before the run below rewrites the file
    if torch.cuda.is_available():
        sections += CUDA
    for title, command in sections:
        print(f"running: python {' '.join(command)}", file=sys.stderr, flush=True)
        output, seconds = run(command)
        parts.append(f"## {title}\n\n`python {' '.join(command)}` ({seconds:.0f} s)\n\n{output}\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(parts))  # as it goes: a long run that breaks keeps what it measured
    if not torch.cuda.is_available():
        parts.append(gpu_figures or (
            "## CUDA\n\nNo CUDA device on this machine, so nothing was measured on one; "
            "on a machine with one, this script adds the grid, training and live-session benchmarks on cuda, "
            "and `bash bench/gpu_check.sh` runs the whole CUDA check.\n"))
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
