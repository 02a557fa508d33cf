"""The first view of a preset: seconds `LiveSession.preview` takes on one thread, as a page gets it
right after choosing the preset (coarse: 48², 32² for stacks deeper than 16; the exact views follow).

    python bench/first_view.py [--repeats 3] [PRESET ...]

Prints one line per preset: its grid (depths, side, side) and the time of each repeat. Goal (issue
13): under 1 s for every preset, planar K = 32 the slowest.
"""

from __future__ import annotations

import argparse
import time

import torch

from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.live import LiveSession

SLOWEST = ["planar-u1-k32", "planar-u2-k32", "sylvester-u4", "glow-checkerboard", "spline-smiley", "cnf-fm-moons"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=SLOWEST)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a served session computes
    for name in args.presets:
        live = LiveSession(ExperimentSpec.load(preset_path(name)))
        try:
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                frame = live.preview()
                seconds.append(time.perf_counter() - start)
            print(f"{name}: {tuple(frame.views.log_q.shape)}, " + ", ".join(f"{s:.3f}" for s in seconds) + " s", flush=True)
        finally:
            live.close()


if __name__ == "__main__":
    main()
