import base64
import zlib

import pytest

from flowviz.core.link import MAX_LINK_CHARS, spec_from_link, spec_to_link
from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec


def test_every_preset_survives_a_link(presets):
    for path in presets:
        spec = ExperimentSpec.load(path)
        link = spec_to_link(spec)
        assert spec_from_link(link) == spec
        assert link.isascii() and all(c.isalnum() or c in "-_" for c in link)


def test_points_and_seed_travel_in_the_link():
    spec = ExperimentSpec.from_dict({"seed": 1234, "target": {"name": "points", "points": [[0, 1], [2.5, -3]]}})
    assert spec_from_link(spec_to_link(spec)) == spec


@pytest.mark.parametrize("tamper", [
    lambda link: link[:-7],  # cut short in a chat message
    lambda link: link.replace(link[5], "*"),  # not base64 at all
    lambda link: "A" + link,  # shifted bytes: not a deflate stream
])
def test_a_damaged_link_is_refused_with_a_reason(tamper):
    link = spec_to_link(ExperimentSpec.from_dict({"layers": [{"type": "planar"}]}))
    with pytest.raises(SpecError, match="link|spec"):
        spec_from_link(tamper(link))


def test_a_valid_link_with_a_bad_field_names_the_field():
    text = '{"layers": [{"type": "planar", "settings": {"nope": 1}}]}'
    link = base64.urlsafe_b64encode(zlib.compress(text.encode())).decode()
    with pytest.raises(SpecError, match=r"layers\[0\]\.settings\.nope"):
        spec_from_link(link)


def test_a_small_link_cannot_inflate_without_bound():
    bomb = base64.urlsafe_b64encode(zlib.compress(b" " * 20_000_000, 9)).decode()
    assert len(bomb) < MAX_LINK_CHARS
    with pytest.raises(SpecError, match="damaged or too large"):
        spec_from_link(bomb)


def test_an_overlong_link_is_refused_before_decoding():
    with pytest.raises(SpecError, match="characters long"):
        spec_from_link("A" * (MAX_LINK_CHARS + 1))
