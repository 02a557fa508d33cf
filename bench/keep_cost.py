"""The event loop's CPU for one kept state while training (what a page's keeper costs the loop every
session of a server shares).

    python bench/keep_cost.py [--preset realnvp-moons] [--seconds 10]

A session of the preset trains; every 50 ms this thread asks for the kept state as the page's ticks
do (`kept_bytes(wait=False)`) and counts its own CPU (`time.thread_time`) over the calls that got
one. Since 2026-12-03 the training thread writes the state between two steps and the caller only
picks it up. Ends with one JSON line: {"preset", "kept_states", "caller_ms_per_kept_state", "bytes"}.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.state import ExperimentState


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    state = ExperimentState(ExperimentSpec.load(preset_path(args.preset)))
    state.playing = True
    time.sleep(2)
    spent, got, size = 0.0, 0, 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        start = time.thread_time()
        kept = state.live.kept_bytes(wait=False)
        spent += time.thread_time() - start
        if kept is not None:
            got, size = got + 1, len(kept[0])
        time.sleep(0.05)
    state.playing = False
    state.close()
    per_keep = 1e3 * spent / max(got, 1)
    print(f"{got} kept states while training, {per_keep:.2f} ms of the caller's CPU each, {size / 1024:.0f} KiB")
    print(json.dumps({"preset": args.preset, "kept_states": got, "caller_ms_per_kept_state": round(per_keep, 3),
                      "bytes": size}))


if __name__ == "__main__":
    main()
