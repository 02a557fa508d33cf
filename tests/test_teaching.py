"""Teaching features of the page: the ledger, the formula, drawing a target, step explanations and
presentation mode (without a browser; tests/test_browser.py clicks them for real)."""

import re

import numpy as np
import pytest
import torch

from flowviz.core.layers import LAYERS
from flowviz.core.link import spec_to_link
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.explorer import Explorer
from flowviz.ui.layout import PANEL_NAMES, SIDEBAR_PANELS, Sizes
from flowviz.ui.teaching import formula_tex, step_explanation

SPEC = ExperimentSpec.from_dict({
    "target": {"name": "moons"},
    "layers": [{"type": "affine_coupling"}, {"type": "planar"}, {"type": "spline_coupling", "settings": {"hidden": 16}}],
    "training": {"learning_rate": 3e-3, "batch_size": 128},
    "view": {"resolution": 32},
})


@pytest.fixture
def explorer():
    page = Explorer(SPEC)
    for _ in range(3):
        page.state.step()  # weights away from the identity, so log-dets are not all zero
    yield page
    page.close()


def _ledger_numbers(html: str) -> dict[str, float]:
    """The sum and the direct value, read back from the table the page shows."""
    cells = re.findall(r"<td>(-?[\d.]+|−∞)</td></tr>", html)
    return {"sum": float(cells[-2]), "direct": float(cells[-1])}


# -- the ledger ------------------------------------------------------------------------------------
def test_clicking_a_strip_panel_follows_that_point_through_the_flow(explorer):
    layout = explorer.strips.density.layout
    dx, dy = layout.offset(2)
    explorer.strips.tap(explorer.strips.log_det, 0.4 + dx, -0.3 + dy)
    assert explorer.state.followed[0] == 2
    assert explorer.state.followed[1] == pytest.approx((0.4, -0.3))
    html = explorer.ledger.table.object
    numbers = _ledger_numbers(html)
    assert numbers["sum"] == pytest.approx(numbers["direct"], abs=2e-4)
    assert "they agree" in html
    # The shown sum is ln q_K of the flow at z_K.
    ledger = explorer.state.live.follow((0.4, -0.3), 2)
    z_k = torch.tensor([ledger.rows[-1].point], dtype=torch.float32)
    assert float(explorer.state.live.flow.log_prob(z_k)[0].detach()) == pytest.approx(ledger.log_q_direct, abs=1e-4)
    # The point is marked in all four panels of every strip, and its path on the model.
    marks = explorer.strips.density.marks.data
    assert len(marks["x"]) == 4 and explorer.strips.log_det.marks is explorer.strips.density.marks is explorer.strips.samples.marks
    assert marks["x"][2] == pytest.approx(0.4 + dx) and marks["y"][2] == pytest.approx(-0.3 + dy)
    assert len(explorer.overview.target_model.path.data["x"]) == 4
    assert "At the followed point" in explorer.ledger.formula.object


def test_a_click_between_panels_follows_nothing(explorer):
    layout = explorer.strips.density.layout
    x_gap = layout.x0 + layout.w * (1 + 0.04)
    explorer.strips.tap(explorer.strips.density, x_gap, 0.0)
    assert explorer.state.followed is None


def test_the_ledger_follows_edits_and_stops_on_request(explorer):
    explorer.state.follow_output(1.0, 0.2)
    assert explorer.state.followed[0] == 3
    explorer.layer_editor.stack.act({"action": "add", "type": "actnorm"})
    assert explorer.ledger.table.object.count("<tr") == 1 + 5 + 3  # header, base + 4 layers, 3 sums
    assert "ActNorm" in explorer.ledger.table.object
    explorer.state.unfollow()
    assert explorer.state.followed is None and explorer.strips.density.marks.data["x"] == []
    assert "Follow a point" in explorer.ledger.table.object


def test_the_formula_names_every_layer_type_of_the_stack():
    tex = formula_tex(list(LAYERS))
    for name in LAYERS:
        info = LAYERS[name].info
        assert info.tex_map and info.tex_log_det, f"{name} has no TeX on its LayerInfo"
        assert info.title.split()[0] in tex and info.tex_map in tex and info.tex_log_det in tex
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert tex.count("{") == tex.count("}")


# -- drawing -----------------------------------------------------------------------------------
def test_drawing_sprays_points_then_trains_on_them(explorer):
    explorer.overview.draw.value = True
    assert explorer.overview.target_model.target_fig.toolbar.active_drag is None  # a drag paints, not pans
    explorer.overview.target_event(-1.0, 1.0, "tap")
    for i in range(20):
        explorer.overview.target_event(-1.0 + 0.1 * i, 1.0 - 0.05 * i, "drag")
    drawn = np.array(explorer.state.drawn)
    assert len(drawn) > 100 and explorer.state.followed is None  # a click while drawing paints, not follows
    assert len(explorer.overview.target_model.drawn.data["x"]) == len(drawn)
    assert np.abs(drawn - [-0.05, 0.525]).max() < 2.5
    explorer.state.use_drawing()
    spec = explorer.state.spec
    assert spec.target.name == "points" and spec.target.settings["standardize"] is False
    assert np.allclose(np.array(spec.target.points), drawn)
    assert explorer.state.live.step == 0 and not explorer.overview.draw.value and explorer.state.drawn == []
    assert "drawn by hand" in explorer.target.note.object
    explorer.state.step()
    assert explorer.state.live.step == 1


def test_training_on_an_empty_drawing_says_what_to_do(explorer):
    explorer.overview.draw.value = True
    explorer.state.use_drawing()
    assert "Draw some points first" in explorer.state.message
    assert explorer.state.spec.target.name == "moons"


def test_clear_forgets_the_drawing(explorer):
    explorer.overview.draw.value = True
    explorer.overview.target_event(0.0, 0.0, "tap")
    explorer.state.clear_drawing()
    assert explorer.state.drawn == [] and len(explorer.overview.target_model.drawn.data["x"]) == 0
    assert explorer.overview.use.disabled


# -- step explanations -------------------------------------------------------------------------
def test_a_step_explains_itself_with_its_numbers(explorer):
    text = explorer.toolbar.explanation.object
    assert explorer.toolbar.explanation.visible
    assert "Step 3" in text and "backwards through the 3 layers" in text
    loss = explorer.state.live.losses[-1]
    assert f"{loss:.4f} nats" in text
    assert f"{explorer.state.live.trainer.last_grad_norm:.3g}" in text
    explorer.state.reset()
    explorer.state.render_now()
    assert not explorer.toolbar.explanation.visible


def test_reverse_kl_steps_explain_the_energy_and_annealing():
    spec = ExperimentSpec.from_dict({"target": {"name": "u1"}, "layers": [{"type": "planar"}],
                                     "training": {"objective": "reverse_kl", "anneal_steps": 100, "grad_clip": 1.0}})
    text = step_explanation(spec, 10, 1.5, 3.0, 0.11, 1)
    assert "energy U(x)" in text and "β = 0.11" in text and "clipped to 1" in text


# -- presentation ------------------------------------------------------------------------------
def test_hiding_panels_is_part_of_the_spec_and_the_link(explorer):
    explorer.presentation.hidden.value = ["training", "samples", "ledger"]
    assert explorer.state.spec.presentation.hidden == ("training", "samples", "ledger")
    assert not explorer.panels["training"].visible and not explorer.panels["samples"].visible
    assert explorer.panels["density"].visible
    reopened, problem = Explorer.from_link(spec_to_link(explorer.state.spec))
    assert problem == "" and reopened.state.spec.presentation.hidden == ("training", "samples", "ledger")
    assert not reopened.panels["ledger"].visible and reopened.presentation.hidden.value == ["training", "samples", "ledger"]
    reopened.close()


def test_projector_mode_enlarges_the_views_and_survives_a_preset_file(explorer, tmp_path):
    width = explorer.strips.density.figure.width
    explorer.presentation.projector.widgets["projector"].value = True
    assert explorer.state.spec.presentation.projector
    assert explorer.strips.density.figure.width > width * 1.2
    assert explorer.strips.density.sizes == Sizes.of(projector=True)
    assert explorer.overview.target_model.target_fig.width > 300
    path = tmp_path / "class.json"
    explorer.state.spec.save(path)
    loaded = Explorer(ExperimentSpec.load(path))
    assert loaded.presentation.projector.widgets["projector"].value
    assert loaded.strips.density.sizes == Sizes.of(projector=True)
    loaded.close()


def test_a_page_with_every_sidebar_panel_hidden_folds_its_sidebar():
    spec = SPEC.replace(presentation={"hidden": list(SIDEBAR_PANELS)})
    page = Explorer(spec)
    assert page.sidebar_hidden()
    page.close()
    assert set(SIDEBAR_PANELS) <= set(PANEL_NAMES)


# -- exports -----------------------------------------------------------------------------------
def test_every_export_button_gives_a_file_that_opens(explorer):
    import io

    from PIL import Image

    from flowviz.core.checkpoint import load_model

    png = explorer.experiment.exports.views_png().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).size[0] > 400
    depth = Image.open(explorer.experiment.exports.depth_gif())
    assert depth.format == "GIF" and depth.n_frames > 3
    training = Image.open(explorer.experiment.exports.training_gif())  # three steps were drawn by the fixture
    assert training.n_frames >= 3
    flow, spec, step = load_model(explorer.experiment.exports.model_file().getvalue())
    assert spec == explorer.state.spec and step == 3
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flow.log_prob(x), explorer.state.live.flow.log_prob(x), rtol=0, atol=0)
    lines = explorer.experiment.exports.samples_file().getvalue().decode().splitlines()
    assert lines[0] == "x,y" and len(lines) == 2001
    assert np.isfinite(np.loadtxt(lines[1:], delimiter=",")).all()


def test_a_training_gif_before_any_training_says_what_to_do():
    page = Explorer(SPEC)
    assert page.experiment.exports.training_gif().getvalue() == b""
    assert "Train for a few steps first" in page.state.message
    page.close()
