"""Teaching features of the page: the ledger, the formula, drawing a target, step explanations and
presentation mode (without a browser; tests/test_browser.py clicks them for real)."""

import re

import numpy as np
import pytest
import torch

from flowviz.core.layers import LAYERS
from flowviz.core.link import spec_to_link
from flowviz.core.spec import PANELS, ExperimentSpec
from flowviz.ui.explorer import SIDEBAR_PANELS, Explorer
from flowviz.ui.teaching import LAYER_TEX, formula_tex, step_explanation
from flowviz.ui.views import PROJECTOR_STRIP_PX

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
        page._step()  # weights away from the identity, so log-dets are not all zero
    yield page
    page.close()


def _ledger_numbers(html: str) -> dict[str, float]:
    """The sum and the direct value, read back from the table the page shows."""
    cells = re.findall(r"<td>(-?[\d.]+|−∞)</td></tr>", html)
    return {"sum": float(cells[-2]), "direct": float(cells[-1])}


# -- the ledger ------------------------------------------------------------------------------------
def test_clicking_a_strip_panel_follows_that_point_through_the_flow(explorer):
    layout = explorer.density.layout
    dx, dy = layout.offset(2)
    explorer._on_strip_tap(explorer.log_det, 0.4 + dx, -0.3 + dy)
    assert explorer._followed[0] == 2
    assert explorer._followed[1] == pytest.approx((0.4, -0.3))
    html = explorer.ledger_table.object
    numbers = _ledger_numbers(html)
    assert numbers["sum"] == pytest.approx(numbers["direct"], abs=2e-4)
    assert "they agree" in html
    # The shown sum is ln q_K of the flow at z_K.
    ledger = explorer.live.follow((0.4, -0.3), 2)
    z_k = torch.tensor([ledger.rows[-1].point], dtype=torch.float32)
    assert float(explorer.live.flow.log_prob(z_k)[0].detach()) == pytest.approx(ledger.log_q_direct, abs=1e-4)
    # The point is marked in all four panels of every strip, and its path on the model.
    marks = explorer.density.marks.data
    assert len(marks["x"]) == 4 and explorer.log_det.marks is explorer.density.marks is explorer.samples.marks
    assert marks["x"][2] == pytest.approx(0.4 + dx) and marks["y"][2] == pytest.approx(-0.3 + dy)
    assert len(explorer.target_model.path.data["x"]) == 4
    assert "At the followed point" in explorer.formula.object


def test_a_click_between_panels_follows_nothing(explorer):
    layout = explorer.density.layout
    x_gap = layout.x0 + layout.w * (1 + 0.04)
    explorer._on_strip_tap(explorer.density, x_gap, 0.0)
    assert explorer._followed is None


def test_the_ledger_follows_edits_and_stops_on_request(explorer):
    explorer._on_output_tap(1.0, 0.2)
    assert explorer._followed[0] == 3
    explorer.stack.act({"action": "add", "type": "actnorm"})
    assert explorer.ledger_table.object.count("<tr") == 1 + 5 + 3  # header, base + 4 layers, 3 sums
    assert "ActNorm" in explorer.ledger_table.object
    explorer._unfollow()
    assert explorer._followed is None and explorer.density.marks.data["x"] == []
    assert "Follow a point" in explorer.ledger_table.object


def test_the_formula_names_every_layer_type_of_the_stack():
    tex = formula_tex(list(LAYERS), {name: LAYERS[name].info.title for name in LAYERS})
    assert set(LAYER_TEX) == set(LAYERS)
    for name in LAYERS:
        assert LAYERS[name].info.title.split()[0] in tex
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert tex.count("{") == tex.count("}")


# -- drawing -----------------------------------------------------------------------------------
def test_drawing_sprays_points_then_trains_on_them(explorer):
    explorer.draw_toggle.value = True
    assert explorer.target_model.target_fig.toolbar.active_drag is None  # a drag paints, not pans
    explorer._on_target_event(-1.0, 1.0, "tap")
    for i in range(20):
        explorer._on_target_event(-1.0 + 0.1 * i, 1.0 - 0.05 * i, "drag")
    drawn = np.array(explorer._drawn)
    assert len(drawn) > 100 and explorer._followed is None  # a click while drawing paints, not follows
    assert len(explorer.target_model.drawn.data["x"]) == len(drawn)
    assert np.abs(drawn - [-0.05, 0.525]).max() < 2.5
    explorer._use_drawing()
    spec = explorer.spec
    assert spec.target.name == "points" and spec.target.settings["standardize"] is False
    assert np.allclose(np.array(spec.target.points), drawn)
    assert explorer.live.step == 0 and not explorer.draw_toggle.value and explorer._drawn == []
    assert "drawn by hand" in explorer.points_note.object
    explorer._step()
    assert explorer.live.step == 1


def test_training_on_an_empty_drawing_says_what_to_do(explorer):
    explorer.draw_toggle.value = True
    explorer._use_drawing()
    assert "Draw some points first" in explorer.message
    assert explorer.spec.target.name == "moons"


def test_clear_forgets_the_drawing(explorer):
    explorer.draw_toggle.value = True
    explorer._on_target_event(0.0, 0.0, "tap")
    explorer._clear_drawing()
    assert explorer._drawn == [] and len(explorer.target_model.drawn.data["x"]) == 0
    assert explorer.draw_use.disabled


# -- step explanations -------------------------------------------------------------------------
def test_a_step_explains_itself_with_its_numbers(explorer):
    text = explorer.explanation.object
    assert explorer.explanation.visible
    assert "Step 3" in text and "backwards through the 3 layers" in text
    loss = explorer.live.history_loss[-1]
    assert f"{loss:.4f} nats" in text
    assert f"{explorer.live.trainer.last_grad_norm:.3g}" in text
    explorer._reset()
    explorer._render_now()
    assert not explorer.explanation.visible


def test_reverse_kl_steps_explain_the_energy_and_annealing():
    spec = ExperimentSpec.from_dict({"target": {"name": "u1"}, "layers": [{"type": "planar"}],
                                     "training": {"objective": "reverse_kl", "anneal_steps": 100, "grad_clip": 1.0}})
    text = step_explanation(spec, 10, 1.5, 3.0, 0.11, 1)
    assert "energy U(x)" in text and "β = 0.11" in text and "clipped to 1" in text


# -- presentation ------------------------------------------------------------------------------
def test_hiding_panels_is_part_of_the_spec_and_the_link(explorer):
    explorer.hidden.value = ["training", "samples", "ledger"]
    assert explorer.spec.presentation.hidden == ("training", "samples", "ledger")
    assert not explorer.panels["training"].visible and not explorer.panels["samples"].visible
    assert explorer.panels["density"].visible
    reopened, problem = Explorer.from_link(spec_to_link(explorer.spec))
    assert problem == "" and reopened.spec.presentation.hidden == ("training", "samples", "ledger")
    assert not reopened.panels["ledger"].visible and reopened.hidden.value == ["training", "samples", "ledger"]
    reopened.close()


def test_projector_mode_enlarges_the_views_and_survives_a_preset_file(explorer, tmp_path):
    width = explorer.density.figure.width
    explorer.projector.value = True
    assert explorer.spec.presentation.projector
    assert explorer.density.figure.width > width * 1.2
    assert explorer.density.strip_px == PROJECTOR_STRIP_PX
    assert explorer.target_model.target_fig.width > 300
    path = tmp_path / "class.json"
    explorer.spec.save(path)
    loaded = Explorer(ExperimentSpec.load(path))
    assert loaded.projector.value and loaded.density.strip_px == PROJECTOR_STRIP_PX
    loaded.close()


def test_a_page_with_every_sidebar_panel_hidden_folds_its_sidebar():
    spec = SPEC.replace(presentation={"hidden": list(SIDEBAR_PANELS)})
    page = Explorer(spec)
    assert page.sidebar_hidden()
    page.close()
    assert set(SIDEBAR_PANELS) <= set(PANELS)


# -- exports -----------------------------------------------------------------------------------
def test_every_export_button_gives_a_file_that_opens(explorer):
    import io

    from PIL import Image

    from flowviz.core.checkpoint import load_model

    png = explorer._views_png().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).size[0] > 400
    depth = Image.open(explorer._depth_gif())
    assert depth.format == "GIF" and depth.n_frames > 3
    training = Image.open(explorer._training_gif())  # three steps were drawn by the fixture
    assert training.n_frames >= 3
    flow, spec, step = load_model(explorer._model_file().getvalue())
    assert spec == explorer.spec and step == 3
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flow.log_prob(x), explorer.live.flow.log_prob(x), rtol=0, atol=0)
    lines = explorer._samples_file().getvalue().decode().splitlines()
    assert lines[0] == "x,y" and len(lines) == 2001
    assert np.isfinite(np.loadtxt(lines[1:], delimiter=",")).all()


def test_a_training_gif_before_any_training_says_what_to_do():
    page = Explorer(SPEC)
    assert page._training_gif().getvalue() == b""
    assert "Train for a few steps first" in page.message
    page.close()
