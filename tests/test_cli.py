"""The headless CLI, run as a user would: `python -m flowviz ...`."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from flowviz.core.checkpoint import load_model
from flowviz.core.spec import ExperimentSpec
from flowviz.figures import depth_frame_count

ROOT = Path(__file__).resolve().parent.parent


def flowviz(*args: str) -> subprocess.CompletedProcess:
    # check=False: the tests read the exit status themselves (some expect a failure)
    return subprocess.run([sys.executable, "-m", "flowviz", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)


@pytest.fixture
def small_preset(tmp_path: Path) -> Path:
    spec = ExperimentSpec.from_dict({
        "title": "tiny", "description": "a test", "seed": 2,
        "layers": [{"type": "actnorm"}, {"type": "spline_coupling", "settings": {"hidden": 16}},
                   {"type": "planar"}, {"type": "spline_coupling", "settings": {"hidden": 16, "transformed": "z1"}}],
        "target": {"name": "8gaussians"},
        "training": {"steps": 1000, "eval_every": 20, "learning_rate": 0.005},
        "view": {"resolution": 32},
    })
    path = tmp_path / "tiny.json"
    spec.save(path)
    return path


def test_train_writes_metrics_figure_and_a_safely_loadable_model(small_preset: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = flowviz("train", small_preset, "--steps", 60, "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 60 and metrics["steps_per_s"] > 0
    assert {"seconds", "train_nll", "test_nll", "kl"} <= metrics.keys() and metrics["kl"] is not None
    assert "step 60/60" in result.stderr and "KL" in result.stderr
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60 and rows[-1]["kl"] != ""
    assert (out / "views.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "samples.csv") as handle:
        samples = list(csv.reader(handle))
    assert samples[0] == ["x", "y"] and len(samples) == 2001
    assert all(math.isfinite(float(value)) for row in samples[1:] for value in row)
    raw = torch.load(out / "model.pt", weights_only=True)  # nothing to unpickle
    assert raw["format"] == "flowviz-model"
    flow, spec, step = load_model(out / "model.pt")
    assert step == 60 and spec == ExperimentSpec.load(out / "spec.json")
    held_out = torch.randn(100, 2)
    assert torch.isfinite(flow.eval().log_prob(held_out)).all()


def test_trained_model_reproduces_the_reported_test_nll(small_preset: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = flowviz("train", small_preset, "--steps", 20, "--out", out, "--quiet")
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.stderr == ""
    from flowviz.core.training import Trainer

    flow, spec, _ = load_model(out / "model.pt")
    trainer = Trainer(spec, flow=flow)
    assert trainer.evaluate().test_nll == pytest.approx(metrics["test_nll"], abs=1e-4)


def test_flow_matching_trains_through_the_cli_and_its_kl_checks_out_from_the_saved_model(tmp_path: Path):
    out = tmp_path / "run"
    result = flowviz("train", "cnf-fm-moons", "--steps", 30, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["objective"] == "flow_matching" and metrics["kl_direction"] == "p||q"
    assert metrics["train_nll"] is None  # the loss is a velocity regression, not a likelihood
    from flowviz.core.build import build_target

    flow, spec, _ = load_model(out / "model.pt")
    target = build_target(spec.target, spec.seed)
    held_out = target.held_out(spec.training.test_size, spec.seed)
    with torch.no_grad():
        kl = float((target.log_prob(held_out) - flow.eval().log_prob(held_out)).mean())
    assert kl == pytest.approx(metrics["kl"], abs=1e-4)


def test_bad_preset_fails_naming_the_field(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": [{"type": "spline_coupling", "settings": {"bins": 1000}}]}))
    for command in (("check", bad), ("train", bad), ("gif", bad)):
        result = flowviz(*command)
        assert result.returncode == 2
        assert "layers[0].settings.bins" in result.stderr and "from 2 to 64" in result.stderr


def test_gif_writes_a_looping_animation_of_the_flow_through_depth(small_preset: Path, tmp_path: Path):
    out = tmp_path / "gifs" / "depth.gif"
    result = flowviz("gif", small_preset, "--steps", 20, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == 20 and report["gif"] == str(out) and report["bytes"] == out.stat().st_size
    gif = Image.open(out)
    assert gif.format == "GIF" and gif.is_animated and gif.info["loop"] == 0
    assert gif.n_frames == report["frames"] == depth_frame_count(4)


def test_gif_of_training_has_a_frame_every_n_steps(small_preset: Path, tmp_path: Path):
    out = tmp_path / "training.gif"
    result = flowviz("gif", small_preset, "--kind", "training", "--steps", 30, "--every", 10, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "step 30/30" in result.stderr
    gif = Image.open(out)
    assert gif.is_animated and gif.n_frames == 4 and gif.info["loop"] == 0  # steps 0, 10, 20 and 30
    bad = flowviz("gif", small_preset, "--kind", "training", "--every", 0)
    assert bad.returncode == 2 and "--every" in bad.stderr


def test_check_accepts_the_shipped_presets():
    presets = sorted((ROOT / "presets").glob("*.json"))
    result = flowviz("check", *presets)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(presets)


def test_unknown_device_fails_cleanly(small_preset: Path):
    result = flowviz("train", small_preset, "--steps", 1, "--device", "cuda:42")
    assert result.returncode == 2 and "not available" in result.stderr


def test_diverging_run_reports_the_layer_and_exits_1(tmp_path: Path):
    preset = tmp_path / "diverge.json"
    ExperimentSpec.from_dict({
        "base": {"name": "uniform", "settings": {"half_width": 0.1}},  # the data lies outside the box: ln q = -inf
        "layers": [{"type": "actnorm"}], "target": {"name": "8gaussians"},
    }).save(preset)
    result = flowviz("train", preset, "--steps", 5)
    assert result.returncode == 1
    assert "non-finite" in result.stderr and "restored" in result.stderr


def test_presets_are_listed_and_found_by_name_or_path(tmp_path: Path):
    listed = flowviz("presets")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {path.stem for path in (ROOT / "presets").glob("*.json")} == set(names)
    assert flowviz("check", "realnvp-moons", ROOT / "presets" / "realnvp-moons.json").returncode == 0
    unknown = flowviz("train", "realnvp-moon", "--steps", "1")
    assert unknown.returncode == 2 and "no preset or file named 'realnvp-moon'" in unknown.stderr


def test_serve_refuses_an_unknown_preset_before_starting_a_server():
    result = flowviz("serve", "no-such-preset", "--port", "1")
    assert result.returncode == 2 and "flowviz presets" in result.stderr
