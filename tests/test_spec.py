"""The experiment spec: round trips, and errors that name the field and the allowed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowviz.core.bases import BASES
from flowviz.core.layers import LAYERS
from flowviz.core.limits import LIMITS
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec

PRESETS = sorted(Path(__file__).parent.parent.joinpath("presets").glob("*.json"))


def test_defaults_fill_in_and_round_trip():
    spec = ExperimentSpec.from_dict({"layers": [{"type": "spline_coupling", "settings": {"bins": 12}}]})
    assert spec.layers[0].settings == {"transformed": "z2", "bins": 12, "bound": 5.0, "hidden": 64, "depth": 2, "activation": "relu"}
    assert spec.training.batch_size == 512 and spec.view.resolution == 128
    assert ExperimentSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["layers"][0]["type"] == "spline_coupling"


layer_specs = st.builds(
    lambda name, enabled: {"type": name, "enabled": enabled}, st.sampled_from(sorted(LAYERS)), st.booleans()
)


@given(layers=st.lists(layer_specs, max_size=6), base=st.sampled_from(sorted(BASES)), seed=st.integers(0, 2**31 - 1))
def test_any_valid_spec_round_trips(layers, base, seed):
    spec = ExperimentSpec.from_dict({"seed": seed, "base": {"name": base}, "layers": layers})
    assert ExperimentSpec.from_json(spec.to_json(indent=None)) == spec


def test_points_target_round_trips():
    spec = ExperimentSpec.from_dict({"target": {"name": "points", "points": [[0, 1], [2.5, -1], [3, 3]]}})
    assert spec.target.points == ((0.0, 1.0), (2.5, -1.0), (3.0, 3.0))
    assert ExperimentSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "data, field, says",
    [
        ({"layers": [{"type": "spline_coupling", "settings": {"bins": 100}}]}, "layers[0].settings.bins", "from 2 to 64"),
        ({"layers": [{"type": "affine_coupling"}, {"type": "glow"}]}, "layers[1].type", "spline_coupling"),
        ({"layers": [{"type": "planar", "settings": {"width": 3}}]}, "layers[0].settings.width", "no settings"),
        ({"layers": [{"type": "affine_coupling", "settings": {"hidden": "wide"}}]}, "layers[0].settings.hidden", "integer"),
        ({"layers": [{"type": "affine_coupling", "settings": {"hidden": 64.5}}]}, "layers[0].settings.hidden", "integer"),
        ({"layers": [{"type": "affine_coupling", "enabled": "yes"}]}, "layers[0].enabled", "true or false"),
        ({"layers": [{"type": "swap"}] * (LIMITS.max_layers + 1)}, "layers", f"at most {LIMITS.max_layers}"),
        ({"layers": {"type": "swap"}}, "layers", "list"),
        ({"base": {"name": "cauchy"}}, "base.name", "standard_normal"),
        ({"base": {"name": "student_t", "settings": {"df": 0}}}, "base.settings.df", "from 0.5"),
        ({"base": {"name": "gaussian_mixture", "settings": {"components": 17}}}, "base.settings.components", "to 16"),
        ({"target": {"name": "mnist"}}, "target.name", "checkerboard"),
        ({"target": {"name": "moons", "points": [[0, 0], [1, 1]]}}, "target.points", "only the 'points' target"),
        ({"target": {"name": "points", "points": [[0, 0], [1, "x"]]}}, "target.points[1]", "finite numbers"),
        ({"target": {"name": "points", "points": [[0, 0]]}}, "target.points", "expected 2 to"),
        ({"training": {"learning_rate": -1}}, "training.learning_rate", "from 1e-06 to 10"),
        ({"training": {"learning_rate": float("nan")}}, "training.learning_rate", "number"),
        ({"training": {"batch_size": 100_000}}, "training.batch_size", "to 8192"),
        ({"training": {"objective": "elbo"}}, "training.objective", "'forward_kl', 'reverse_kl'"),
        ({"training": {"objective": "reverse_kl"}, "target": {"name": "checkerboard"}}, "training.objective", "forward_kl"),
        ({"training": {"objective": "reverse_kl"}, "target": {"name": "u1"},
          "base": {"name": "gaussian_mixture", "learnable": True}}, "base.learnable", "reverse KL"),
        ({"training": {"objective": "flow_matching"}, "layers": [{"type": "cnf"}, {"type": "swap"}]},
         "training.objective", "exactly one cnf layer; it has cnf, swap"),
        ({"training": {"objective": "flow_matching"}, "layers": [{"type": "affine_coupling"}]},
         "training.objective", "exactly one cnf layer"),
        ({"layers": [{"type": "planar"}], "presentation": {"hand": 2}}, "presentation.hand", "names no layer"),
        ({"layers": [{"type": "affine_coupling"}], "presentation": {"hand": 1}}, "presentation.hand",
         "no handles to move by hand; these layers have: "),
        ({"layers": [{"type": "planar", "enabled": False}], "presentation": {"hand": 1}}, "presentation.hand",
         "switched off"),
        ({"presentation": {"hand": 0}}, "presentation.hand", "make it learnable"),
        ({"base": {"name": "gaussian_mixture", "learnable": True}, "presentation": {"hand": 0}}, "presentation.hand",
         "no handles"),
        ({"presentation": {"hand": -2}}, "presentation.hand", "out of range"),
        ({"training": {"objective": "flow_matching"}, "layers": [{"type": "cnf"}],
          "base": {"name": "gaussian_mixture", "learnable": True}}, "base.learnable", "flow matching does not train"),
        ({"training": {"pairing": "sinkhorn"}}, "training.pairing", "'optimal_transport'"),
        ({"layers": [{"type": "cnf", "settings": {"contraction": 1.0}}]}, "layers[0].settings.contraction", "to 0.95"),
        ({"view": {"resolution": 4096}}, "view.resolution", "to 512"),
        ({"view": {"xmin": 3, "xmax": 1}}, "view.xmax", "greater than view.xmin"),
        ({"seed": -1}, "seed", "from 0"),
        ({"seed": True}, "seed", "integer"),
        ({"colour": "red"}, "colour", "allowed: base"),
        ({"version": 99}, "version", "expected 1"),
        ([1, 2], "spec", "object"),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(data, field, says):
    with pytest.raises(SpecError) as caught:
        ExperimentSpec.from_dict(data)
    assert caught.value.field == field
    assert says in str(caught.value)


@pytest.mark.parametrize("text", ["", "{", "[1,", '{"a": ' * 100_000, b"\xff\xfe\x00"])
def test_malformed_json_is_a_spec_error(text):
    with pytest.raises(SpecError) as caught:
        ExperimentSpec.from_json(text)
    assert caught.value.field == "spec"


def test_replace_validates():
    spec = ExperimentSpec()
    assert spec.replace(training={"steps": 5}).training.steps == 5
    with pytest.raises(SpecError):
        spec.replace(training={"steps": 0})


def test_there_are_presets():
    assert len(PRESETS) >= 3


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_are_valid_and_canonical(path):
    spec = ExperimentSpec.load(path)
    assert spec.title != "Untitled experiment" and spec.description
