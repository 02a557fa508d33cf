"""Deep fuzzing of every parser of user input: N examples each (default 10,000), counting escapes.

An escape is anything a parser does other than its contract:
- points files (`parse_points`): a finite (n, 2) float array, or PointsFileError;
- preset files (`ExperimentSpec.from_json`): a spec that survives its own JSON round trip, or SpecError;
- links (`read_link`): never raises; its spec survives a link round trip;
- pictures (`read_picture`): grey levels (a 2-D uint8 array) at most 128 a side, or PictureError;
- kept training states (`read_session`, then `Trainer.load_training_state`): finite weights, or
  ValueError (and a refused state leaves the trainer as it was).

Each parser gets random bytes and, mostly, valid inputs damaged by byte flips, cuts and splices
(hypothesis, derandomized so a run can be repeated). The tests' short runs (tests/test_fuzz.py,
tests/test_keep.py) are in CI; this is the long one, run by hand:

    python bench/fuzz.py                       # 10,000 examples per parser
    python bench/fuzz.py --examples 500 --only points presets

Prints one JSON line per parser (`parser`, `examples`, `escapes`, `seconds`) and a last line with the
totals; exits 1 on any escape. The first escapes of each parser are printed with their input.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core.checkpoint import read_session, session_bytes
from flowviz.core.link import read_link, spec_to_link
from flowviz.core.picture import PictureError, read_picture
from flowviz.core.pointfile import PointsFileError, parse_points
from flowviz.core.presets import preset_path
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer


def damaged(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A valid input with bytes changed, its tail cut, or a piece of another spliced in."""
    flips = st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=0, max_size=8)

    def damage(seed: bytes, changes, cut: int, splice: bytes) -> bytes:
        data = bytearray(seed)
        for where, value in changes:
            if data:
                data[where % len(data)] = value
        data = data[: max(1, len(data) - cut)] if cut else data
        return bytes(data) + splice

    return st.builds(damage, st.sampled_from(seeds), flips, st.integers(0, 64), st.binary(max_size=16))


def any_bytes(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=600), damaged(seeds), damaged(seeds), damaged(seeds))


# -- the parsers and their contracts ---------------------------------------------------------------
def check_points(data: bytes, name: str) -> None:
    try:
        points = parse_points(data, name)
    except PointsFileError:
        return
    assert points.ndim == 2 and points.shape[1] == 2 and points.dtype == np.float64, points.shape
    assert np.isfinite(points).all()


def check_preset(data: bytes) -> None:
    try:
        spec = ExperimentSpec.from_json(data)
    except SpecError:
        return
    assert ExperimentSpec.from_json(spec.to_json()) == spec


def check_link(text: str) -> None:
    spec, ignored = read_link(text)
    assert isinstance(ignored, list)
    assert read_link(spec_to_link(spec))[0] == spec


def check_picture(data: bytes, name: str) -> None:
    try:
        grey = read_picture(data, name)
    except PictureError:
        return
    assert grey.ndim == 2 and grey.dtype == np.uint8 and 1 <= min(grey.shape) <= max(grey.shape) <= 128, grey.shape


KEPT_SPEC = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}, {"type": "actnorm"}, {"type": "planar"}],
                                      "training": {"batch_size": 32, "eval_every": 5}})


def check_kept(data: bytes) -> None:
    trainer = Trainer(KEPT_SPEC)
    before = {key: value.clone() for key, value in trainer.flow.state_dict().items()}
    try:
        trainer.load_training_state(read_session(data, KEPT_SPEC))
    except ValueError:
        for key, value in trainer.flow.state_dict().items():
            assert torch.equal(value, before[key]), f"a refused state changed {key}"
        return
    assert all(bool(torch.isfinite(v).all()) for v in trainer.flow.state_dict().values() if v.is_floating_point())


# -- seeds: valid inputs to damage -----------------------------------------------------------------
def point_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 2))
    buffer = io.BytesIO()
    np.save(buffer, points)
    return [("x,y\n" + "\n".join(f"{x:.4f},{y:.4f}" for x, y in points)).encode(),
            "\n".join(f"{x}\t{y}" for x, y in points).encode(), json.dumps(points.tolist()).encode(),
            buffer.getvalue()]


def preset_seeds() -> list[bytes]:
    names = ["realnvp-moons", "spline-smiley", "planar-u1-k8", "upload-returns", "cnf-fm-moons", "hand-planar"]
    return [preset_path(name).read_bytes() for name in names]


def picture_seeds() -> list[bytes]:
    from PIL import Image

    seeds = []
    for mode, kind in (("L", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG"), ("I;16", "PNG")):
        image = Image.new(mode, (40, 24), 200 if mode != "RGBA" else (255, 255, 255, 0))
        image.paste(10 if mode != "RGBA" else (0, 0, 0, 255), (8, 4, 30, 20))
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        seeds.append(buffer.getvalue())
    return seeds


def kept_seeds() -> list[bytes]:
    trainer = Trainer(KEPT_SPEC)
    trainer.run(7)
    return [session_bytes(trainer)]


NAMES = st.sampled_from(["p.csv", "p.tsv", "p.txt", "p.npy", "p.json", "p", "p.png", "p.jpg"])


def parsers(seed_cache: dict) -> dict:
    """name -> (strategy, check) for each parser."""
    link_seeds = [spec_to_link(ExperimentSpec.from_json(p)) for p in seed_cache["presets"]]
    links = st.one_of(st.text(max_size=300),
                      st.builds(lambda s, i, c: s[: i % (len(s) + 1)] + c + s[i % (len(s) + 1) + 1:],
                                st.sampled_from(link_seeds), st.integers(0, 10**6), st.text(max_size=3)))
    return {
        "points": (st.tuples(any_bytes(seed_cache["points"]), NAMES), lambda x: check_points(*x)),
        "presets": (any_bytes(seed_cache["presets"]), check_preset),
        "links": (links, check_link),
        "pictures": (st.tuples(any_bytes(seed_cache["pictures"]), NAMES), lambda x: check_picture(*x)),
        "kept": (any_bytes(seed_cache["kept"]), check_kept),
    }


def run(name: str, strategy, check, examples: int) -> dict:
    escapes: list[str] = []
    count = [0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value) -> None:
        count[0] += 1
        try:
            check(value)
        except Exception as error:  # noqa: BLE001 (every escape is counted, and the run goes on)
            escapes.append(f"{type(error).__name__}: {str(error)[:160]} <- {repr(value)[:200]}")

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fuzz()
    seconds = time.perf_counter() - started
    for escape in escapes[:5]:
        print(f"  {name} escape: {escape}", file=sys.stderr)
    return {"parser": name, "examples": count[0], "escapes": len(escapes), "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--only", nargs="*", default=None, help="points presets links pictures kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = {"points": point_seeds(), "presets": preset_seeds(), "pictures": picture_seeds(), "kept": kept_seeds()}
    rows = []
    for name, (strategy, check) in parsers(seeds).items():
        if args.only and name not in args.only:
            continue
        row = run(name, strategy, check, args.examples)
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {"parsers": len(rows), "examples": sum(r["examples"] for r in rows),
             "escapes": sum(r["escapes"] for r in rows), "seconds": round(sum(r["seconds"] for r in rows), 1)}
    print(json.dumps(total))
    return 1 if total["escapes"] or math.isnan(total["seconds"]) else 0


if __name__ == "__main__":
    sys.exit(main())
