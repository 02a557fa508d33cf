import base64
import json
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


# -- the forgiving reader the app uses -------------------------------------------------------------
from hypothesis import given
from hypothesis import strategies as st

from flowviz.core.link import read_link

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _pack(data) -> str:
    return base64.urlsafe_b64encode(zlib.compress(json.dumps(data).encode())).decode()


def _leaves(data, path=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, path + (key,))
    elif isinstance(data, list) and data and not isinstance(data[0], (int, float)):
        for i, value in enumerate(data):
            yield from _leaves(value, path + (i,))
    else:
        yield path


SOUND = ExperimentSpec.from_dict({
    "seed": 7, "base": {"name": "student_t", "learnable": True},
    "layers": [{"type": "spline_coupling", "settings": {"bins": 12}}, {"type": "actnorm"}, {"type": "planar"}],
    "target": {"name": "u2"}, "training": {"objective": "reverse_kl", "anneal_steps": 100},
})


@given(st.data())
def test_any_tampered_field_gives_a_valid_spec_and_a_message(data):
    tree = SOUND.to_dict()
    leaves = list(_leaves(tree))
    path = data.draw(st.sampled_from(leaves))
    junk = data.draw(JUNK)
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    original = parent[path[-1]]
    parent[path[-1]] = junk
    spec, ignored = read_link(_pack(tree))
    assert isinstance(spec, ExperimentSpec)
    try:
        strict = ExperimentSpec.from_dict(json.loads(json.dumps(tree)))
    except SpecError:
        assert ignored, "a wrong field must be named"
    else:
        assert spec == strict and ignored == []
    # What was not tampered with survives: the seed (unless it was the field) and the target name.
    if ignored and junk != original and path != ("seed",):
        assert spec.seed == 7


def test_a_sound_link_reads_without_messages():
    assert read_link(spec_to_link(SOUND)) == (SOUND, [])


def test_an_undecodable_link_gives_the_default_and_says_why():
    spec, ignored = read_link("%%%")
    assert spec == ExperimentSpec() and "link" in ignored[0]
