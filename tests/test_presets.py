"""The preset library: every preset validates, trains a few steps through the CLI, and together they
cover every layer type and every base; the uploaded-data presets hold exactly assets/returns.csv."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from flowviz.core.bases import BASES
from flowviz.core.layers import LAYERS
from flowviz.core.spec import ExperimentSpec
from flowviz.core.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "presets").glob("*.json"))
STEPS = 3

# One interpreter trains every preset in turn through `flowviz.cli.main`, exactly as
# `python -m flowviz train PRESET --steps 3 --quiet` would, and reports each exit status and final
# JSON line: one import of torch instead of one per preset keeps the whole file well under a minute.
TRAIN_ALL = f"""
import contextlib, io, json, sys
from flowviz.cli import main
results = {{}}
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["train", path, "--steps", "{STEPS:d}", "--quiet"])
    lines = out.getvalue().strip().splitlines()
    results[path] = {{"status": status, "last": lines[-1] if lines else "", "stderr": err.getvalue()}}
print(json.dumps(results))
"""


def load(path: Path) -> ExperimentSpec:
    return ExperimentSpec.load(path)


def test_there_are_enough_presets():
    assert len(PRESETS) >= 14


def test_flowviz_check_accepts_every_preset():
    result = subprocess.run([sys.executable, "-m", "flowviz", "check", *map(str, PRESETS)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(PRESETS)


@pytest.fixture(scope="module")
def trained() -> dict[str, dict]:
    result = subprocess.run([sys.executable, "-c", TRAIN_ALL, *map(str, PRESETS)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_trains_a_few_steps_through_the_cli(trained, path):
    run = trained[str(path)]
    assert run["status"] == 0, run["stderr"]
    assert "step " not in run["stderr"]  # --quiet: no progress lines
    metrics = json.loads(run["last"])
    assert metrics["steps"] == STEPS
    assert metrics["loss"] is not None and math.isfinite(metrics["loss"])
    assert metrics["test_nll"] is not None and math.isfinite(metrics["test_nll"])
    spec = load(path)
    assert metrics["objective"] == spec.training.objective
    if TARGETS[spec.target.name].info.exact_density:
        assert metrics["kl"] is not None and math.isfinite(metrics["kl"])
        assert metrics["kl_direction"] == ("q||p" if spec.training.objective == "reverse_kl" else "p||q")


def test_every_layer_type_and_every_base_appears_in_some_preset():
    specs = [load(p) for p in PRESETS]
    layers = {layer.type for spec in specs for layer in spec.layers}
    bases = {spec.base.name for spec in specs}
    assert set(LAYERS) - layers == set(), "layer types in no preset"
    assert set(BASES) - bases == set(), "bases in no preset"


def test_titles_are_short_and_unique_and_descriptions_say_something():
    specs = {p.stem: load(p) for p in PRESETS}
    titles = [spec.title for spec in specs.values()]
    assert len(set(titles)) == len(titles), "two presets share a title (the picker is keyed by title)"
    for name, spec in specs.items():
        assert spec.title.strip() and spec.title != "Untitled experiment", name
        assert len(spec.title) <= 70, f"{name}: the title is shown in a drop-down; keep it short"
        assert len(spec.description) >= 100, f"{name}: the description should tell a student what to look at"


def test_presets_are_self_contained_and_carry_no_presentation_but_the_lesson():
    """A preset hides no panel and sets no projector (the teacher's choice); it may open its
    continuous flow into time slices, or a layer in hand mode, which is what the lesson is about."""
    for path in PRESETS:
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert set(raw.get("presentation", {})) <= {"time_slices", "hand"}, path.name
        assert "seed" in raw and "steps" in raw.get("training", {}), f"{path.name}: state the seed and the steps"


def test_the_planar_grid_of_figure_3_is_complete_and_fair():
    for u in ("u1", "u2", "u3", "u4"):
        specs = {k: load(ROOT / "presets" / f"planar-{u}-k{k}.json") for k in (2, 8, 32)}
        for k, spec in specs.items():
            assert [layer.type for layer in spec.layers] == ["planar"] * k
            assert spec.target.name == u and spec.training.objective == "reverse_kl"
            assert spec.training.anneal_steps > 0
        # Only K differs within a row, so the KL the bench reports compares like with like.
        assert specs[2].training == specs[8].training == specs[32].training
        assert specs[2].seed == specs[8].seed == specs[32].seed


def test_the_uploaded_data_presets_hold_exactly_the_csv():
    with open(ROOT / "assets" / "returns.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "stock"] and 300 <= len(rows) - 1 <= 2000 + 100
    points = tuple((float(x), float(y)) for x, y in rows[1:])
    users = [p for p in PRESETS if load(p).target.name == "points"]
    assert users, "no preset trains on uploaded points"
    for path in users:
        assert load(path).target.points == points, path.name


def test_the_csv_is_what_its_seeded_script_writes():
    spec = importlib.util.spec_from_file_location("make_points", ROOT / "assets" / "make_points.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = "index,stock\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in module.simulate())
    assert (ROOT / "assets" / "returns.csv").read_text() == expected
