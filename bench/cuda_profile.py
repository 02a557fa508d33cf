"""Where one training step's time goes on a device: torch.profiler over a few steps of a preset's Trainer.

    python bench/cuda_profile.py [--device cuda] [--preset realnvp-moons] [--steps 30]

Prints the operators with the most self CPU time and the host-device synchronisations, and ends with
one JSON line: `device`, `preset`, `ms_per_step` (unprofiled), `kernels_per_step`, `syncs_per_step`
(cudaStreamSynchronize, cudaDeviceSynchronize and device-to-host copies) and `launch_ms_per_step`
(host time in cudaLaunchKernel). On a small 2-D flow a CUDA step is bound by launching kernels, not by
the device: bench/gpu_check.sh runs this next to the CPU's figures.
"""

from __future__ import annotations

import argparse
import json
import time

from torch.profiler import ProfilerActivity, profile

from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")  # the host calls that launch a kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="realnvp-moons")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    trainer = Trainer(ExperimentSpec.load(preset_path(args.preset)), args.device)
    for _ in range(20):
        trainer.step()  # warm-up: allocator, ActNorm's start, lazy kernels
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step()
    ms_per_step = 1000 * (time.perf_counter() - start) / args.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            trainer.step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    by_name = {event.key: event for event in events}

    def count(*names: str) -> int:
        return sum(by_name[name].count for name in names if name in by_name)

    copies_to_host = sum(e.count for e in events if e.key.startswith("Memcpy DtoH"))
    launch_us = sum(by_name[name].self_cpu_time_total for name in LAUNCHES if name in by_name)
    print(json.dumps({"device": args.device, "preset": args.preset, "ms_per_step": round(ms_per_step, 2),
                      "kernels_per_step": round(count(*LAUNCHES) / args.steps, 1),
                      "syncs_per_step": round((count("cudaStreamSynchronize", "cudaDeviceSynchronize")
                                               + copies_to_host) / args.steps, 1),
                      "launch_ms_per_step": round(launch_us / 1000 / args.steps, 2)}))


if __name__ == "__main__":
    main()
