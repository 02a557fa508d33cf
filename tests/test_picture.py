"""Pictures as targets: safe decoding, an exact piecewise-constant density, and the page and spec around it."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowviz.core.build import build_target
from flowviz.core.link import spec_from_link, spec_to_link
from flowviz.core.picture import MAX_SIDE, PictureError, decode_picture, encode_picture, read_picture
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec
from flowviz.core.targets import Picture
from flowviz.core.targets.picture import BUILT_IN
from flowviz.ui.state import ExperimentState


def png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def pixel_centres(target: Picture) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(target.rows), torch.arange(target.cols), indexing="ij")
    x = target.left + (cols.flatten() + 0.5) * target.pixel
    y = target.top - (rows.flatten() + 0.5) * target.pixel
    return torch.stack([x, y], -1).double()


# -- the density -------------------------------------------------------------------------------------
GREY = np.array([[255, 0, 128], [64, 255, 255]], np.uint8)  # 2 rows, 3 columns, two white pixels


@pytest.mark.parametrize("dark_is_dense", [True, False])
def test_each_pixel_holds_its_share_of_the_mass(dark_is_dense):
    target = Picture(dark_is_dense=dark_is_dense, size=3.0, grey=GREY)
    weight = (255.0 - GREY if dark_is_dense else GREY.astype(float)).flatten()
    area = (3.0 / 3) ** 2
    expected = np.log(weight / weight.sum() / area, where=weight > 0, out=np.full(6, -np.inf))
    np.testing.assert_allclose(target.log_prob(pixel_centres(target)).numpy(), expected, rtol=1e-12)
    assert target.log_prob(torch.tensor([[-1.51, 0.0], [0.0, 1.01], [9.0, 9.0]])).eq(-math.inf).all()


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_pictures_integrate_to_one_with_their_entropy(name):
    target = Picture(name, size=6.4)  # 64 pixels a side: each pixel gets 5×5 midpoints of the sum below
    n, half = 320, 3.2
    h = 2 * half / n
    xs = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    log_p = target.log_prob(torch.stack([gx.flatten(), gy.flatten()], -1))
    p = log_p.exp()
    assert float(p.sum() * h * h) == pytest.approx(1.0, abs=1e-9)
    entropy = float(-(torch.where(p > 0, p * log_p, 0.0)).sum() * h * h)
    assert entropy == pytest.approx(target.entropy(), abs=1e-9)


def test_samples_fall_on_pixels_as_often_as_their_weight():
    target = Picture(size=3.0, grey=GREY)
    n = 200_000
    x = target.sample(n, torch.Generator().manual_seed(0)).double()
    col = torch.floor((x[:, 0] - target.left) / target.pixel).long()
    row = torch.floor((target.top - x[:, 1]) / target.pixel).long()
    counts = torch.bincount(row * target.cols + col, minlength=6).double() / n
    w = target.weights
    assert torch.all((counts - w).abs() <= 5 * (w * (1 - w) / n).sqrt() + 1e-12)
    assert torch.isfinite(target.log_prob(x.float())).all()


def test_a_wide_picture_keeps_its_aspect():
    target = Picture(size=8.0, grey=np.zeros((10, 40), np.uint8))
    x = target.sample(10_000, torch.Generator().manual_seed(1))
    assert x[:, 0].min() >= -4 and x[:, 0].max() <= 4 and x[:, 0].max() > 3.9
    assert x[:, 1].abs().max() <= 1.0 and x[:, 1].max() > 0.95


def test_a_blank_picture_has_no_density_and_says_what_to_do():
    with pytest.raises(ValueError, match="all white.*dark"):
        Picture(grey=np.full((4, 4), 255, np.uint8))


# -- reading files -----------------------------------------------------------------------------------
def test_transparency_is_white_and_colour_is_grey():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red: nothing there
    rgba.putpixel((1, 2), (0, 0, 0, 255))
    grey = read_picture(png(rgba), "a.png")
    assert grey.shape == (4, 4) and grey[2, 1] == 0 and (np.delete(grey.flatten(), 2 * 4 + 1) == 255).all()
    assert read_picture(png(Image.new("RGB", (2, 2), (255, 0, 0))), "red.png")[0, 0] == 76  # ITU-R 601 luma


def test_large_pictures_shrink_to_the_spec_size_keeping_their_aspect():
    image = Image.new("L", (1000, 250), 0)
    assert read_picture(jpeg(image), "wide.jpg").shape == (32, 128)
    assert read_picture(png(Image.new("L", (40, 30), 0)), "small.png").shape == (30, 40)  # never enlarged


def test_sixteen_bit_pictures_are_scaled_by_their_brightest_pixel():
    values = np.array([[0, 1000], [2000, 4000]], np.uint16)
    grey = read_picture(png(Image.fromarray(values)), "deep.png")  # saved as a 16-bit PNG
    assert grey.tolist() == [[0, 64], [128, 255]]


def test_exif_orientation_is_not_trusted():
    image = Image.new("L", (8, 4), 255)
    image.paste(0, (0, 0, 2, 2))  # a dark corner, top left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° to display": ignored, the pixels are read as stored
    grey = read_picture(jpeg(image, exif=exif, quality=95), "photo.jpg")
    assert grey.shape == (4, 8) and grey[0, 0] < 40 and grey[3, 7] > 215


def _png_claiming(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose header says width × height (with a valid CRC): a decompression bomb's shape."""
    data = bytearray(png(Image.new("L", (1, 1), 0)))
    ihdr = data[12:29]  # type + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize("data, name, reason", [
    (_png_claiming(100_000, 100_000), "bomb.png", "far more than 50 megapixels"),
    (_png_claiming(8_000, 8_000), "bomb.png", "8,000×8,000 pixels; at most 50 megapixels"),
    (b"GIF89a" + bytes(40), "cat.gif", "not a PNG or JPEG"),
    (png(Image.new("L", (64, 64), 0))[:60], "cut.png", "damaged"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "zeros.png", "not a PNG or JPEG"),
    (bytes(11 * 2**20), "huge.png", "at most 10 MiB"),
])
def test_bad_pictures_are_refused_with_their_reason(data, name, reason):
    with pytest.raises(PictureError, match=reason) as caught:
        read_picture(data, name)
    assert "Upload a PNG or JPEG" in str(caught.value)


def test_the_spec_holds_only_small_pngs():
    grey = np.zeros((MAX_SIDE + 1, 2), np.uint8)
    with pytest.raises(PictureError, match=f"at most {MAX_SIDE} a side"):
        decode_picture(encode_picture(grey))
    with pytest.raises(PictureError, match="not a PNG"):
        decode_picture(base64.b64encode(jpeg(Image.new("L", (4, 4), 0))).decode())
    with pytest.raises(PictureError, match="not base64"):
        decode_picture("not base64!")


# -- the spec, links, presets and the CLI ------------------------------------------------------------
def uploaded_spec(grey: np.ndarray, **settings) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"target": {"name": "image", "settings": {"picture": "uploaded", **settings},
                                                "image": encode_picture(grey)}, "layers": [{"type": "affine_coupling"}]})


def test_an_uploaded_picture_travels_in_links_and_files_bit_for_bit():
    grey = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)  # noise: the worst case for a link
    spec = uploaded_spec(grey, dark_is_dense=False)
    assert spec_from_link(spec_to_link(spec)) == spec and ExperimentSpec.from_json(spec.to_json()) == spec
    target = build_target(spec.target)
    assert isinstance(target, Picture) and target.rows == target.cols == 128
    assert (decode_picture(spec.target.image) == grey).all()


@pytest.mark.parametrize("target, field, words", [
    ({"name": "image", "settings": {"picture": "uploaded"}}, "target.image", "needs the picture"),
    ({"name": "image", "image": encode_picture(np.zeros((2, 2), np.uint8))}, "target.image", "takes no image"),
    ({"name": "moons", "image": encode_picture(np.zeros((2, 2), np.uint8))}, "target.image", "only the 'image' target"),
    ({"name": "image", "settings": {"picture": "uploaded"}, "image": encode_picture(np.full((2, 2), 255, np.uint8))},
     "target.image", "all white"),
    ({"name": "image", "settings": {"size": 0}}, "target.settings.size", "out of range"),
])
def test_wrong_picture_specs_name_the_field(target, field, words):
    with pytest.raises(SpecError, match=words) as caught:
        ExperimentSpec.from_dict({"target": target})
    assert caught.value.field == field


def test_reverse_kl_is_refused_on_a_picture():
    with pytest.raises(SpecError, match="forward_kl"):
        ExperimentSpec.from_dict({"target": {"name": "image"}, "training": {"objective": "reverse_kl"}})


# -- in the page ---------------------------------------------------------------------------------------
@pytest.fixture
def state():
    page = ExperimentState(ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}],
                                                     "view": {"resolution": 16}}))
    yield page
    page.close()


def test_an_uploaded_picture_becomes_the_target_and_a_bad_one_changes_nothing(state):
    image = Image.new("L", (300, 200), 255)
    image.paste(0, (100, 50, 200, 150))
    state.upload(png(image), "square.png")
    assert state.spec.target.name == "image" and state.spec.target.settings["picture"] == "uploaded"
    assert "square.png" in state.target_source and "128×85" in state.target_source
    assert math.isfinite(state.live.trainer.evaluate().kl)
    before = state.spec
    state.upload(b"\x89PNG\r\n\x1a\n" + bytes(30), "broken.png")
    assert state.spec == before and "broken.png" in state.message and "unchanged" in state.message
    state.upload(png(Image.new("L", (5, 5), 255)), "white.png")
    assert state.spec == before and "all white" in state.message
    state.set_target_setting("picture", "logo")  # a built-in picture replaces the upload
    assert state.spec.target.image is None and state.spec.target.settings["picture"] == "logo"


def test_points_files_still_upload_as_points(state):
    state.upload(b"x,y\n0,1\n2,3\n4,5\n", "p.csv")
    assert state.spec.target.name == "points" and len(state.spec.target.points) == 3


def test_the_picture_preset_trains_through_the_cli_with_a_finite_true_kl():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "flowviz", "train", "spline-smiley", "--steps", "40", "--quiet"],
                            capture_output=True, text=True, cwd=root, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert math.isfinite(metrics["kl"]) and metrics["kl"] > 0 and metrics["kl_direction"] == "p||q"
    assert 0 < metrics["ess"] <= 1
    assert len(metrics["kl_by_depth"]) == 7 and metrics["kl_by_depth"][-1] == pytest.approx(metrics["kl"], rel=1e-6)


def test_no_sample_lands_on_a_white_pixel_after_rounding_to_float32():
    """Samples are drawn in float64 and returned in float32: rounding carried 3 of 2 million points
    of a one-pixel checker across their pixel's edge onto a white one (ln p = -inf at a sample of p,
    so an infinite KL) before they were pulled back."""
    grey = np.zeros((64, 64), np.uint8)
    grey[::2, ::2] = grey[1::2, 1::2] = 255
    target = Picture(grey=grey)
    x = target.sample(2_000_000, torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and torch.isfinite(target.log_prob(x)).all()
