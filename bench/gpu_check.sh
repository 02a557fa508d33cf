#!/usr/bin/env bash
# The CUDA check (issue 14): everything that runs on a GPU, in one go, well inside 10 minutes.
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with an NVIDIA GPU
#   PYTHON=/path/to/python bash bench/gpu_check.sh
#   DEVICE=cpu bash bench/gpu_check.sh  # the harness itself, on a machine without one
#
# 1. the CUDA tests (pytest -k cuda: every layer on cuda computes the CPU's points and log-dets, and
#    training on cuda matches the CPU, its CUDA-graph steps the eager ones),
# 2. `flowviz train --device cuda` on three presets (500 steps each), with the CLI's JSON lines,
# 3. training steps as a CUDA graph against eager steps (bench/cuda_steps.py), and the grid benchmark
#    on cuda (bench/grid.py --device "$DEVICE"),
# 4. two presets trained on the same machine's CPU, and a CUDA step profiled (bench/cuda_profile.py),
# 5. a live session on cuda on the same three presets (bench/gpu_live.py: train, render, compare a frame
#    with the CPU's).
# Every part has its own time limit; the last line is one JSON summary with `ok` per part.
# It needs a Python with a CUDA build of torch and flowviz's dependencies (pip install -e '.[test]'
# with the CUDA wheel of torch); it exits 2, saying so, where there is none.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # flowviz from this checkout, installed or not
DEVICE=${DEVICE:-cuda}
if [ "${DEVICE#cuda}" != "$DEVICE" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: $PY has no CUDA-enabled torch (or no GPU is visible): install torch's CUDA wheel and flowviz's dependencies, or set PYTHON" >&2
  exit 2
fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/device.txt"

run() {  # run NAME SECONDS COMMAND...: output in $OUT/NAME.log, exit code in $OUT/NAME.rc
  local name=$1 seconds=$2; shift 2
  local start=$SECONDS
  timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
  echo $? >"$OUT/$name.rc"
  echo "== $name: exit $(cat "$OUT/$name.rc") in $((SECONDS - start)) s"
  tail -n 25 "$OUT/$name.log"
}

run tests 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_training.py tests/test_cli.py -k cuda
for preset in realnvp-moons spline-8gaussians planar-u1-k8; do
  run "train-$preset" 120 "$PY" -m flowviz train "presets/$preset.json" --device "$DEVICE" --steps 500 --quiet
done
run graphs 150 "$PY" bench/cuda_steps.py --device "$DEVICE"
run grid 120 "$PY" bench/grid.py --device "$DEVICE" --repeats 5
for preset in realnvp-moons spline-8gaussians; do  # the same machine's CPU, and where a CUDA step's time goes
  run "train-cpu-$preset" 120 "$PY" -m flowviz train "presets/$preset.json" --device cpu --steps 500 --quiet
  run "profile-$preset" 60 "$PY" bench/cuda_profile.py --device "$DEVICE" --preset "$preset"
done
for preset in realnvp-moons spline-8gaussians planar-u1-k8; do
  run "live-$preset" 90 "$PY" bench/gpu_live.py --device "$DEVICE" --preset "$preset" --seconds 10
done

"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {"device": out.joinpath("device.txt").read_text().strip()}
for rc in sorted(out.glob("*.rc")):
    name = rc.stem
    lines = out.joinpath(f"{name}.log").read_text(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    try:
        result = json.loads(last)
    except ValueError:
        result = last
    summary[name] = {"ok": rc.read_text().strip() == "0" and not (isinstance(result, dict) and result.get("ok") is False),
                     "result": result}
summary["ok"] = all(part["ok"] for key, part in summary.items() if isinstance(part, dict))
print(json.dumps(summary))
PY
