"""Shareable links: a whole experiment, seed included, packed into one URL query value.

The spec's compact JSON is deflated and written in URL-safe base64, so a link stays short enough to
paste (a ten-layer experiment is a few hundred characters) and opening it rebuilds exactly the same
starting state. Reading a link validates it like any other spec: a tampered or truncated link raises
`SpecError` and never half-applies.

Example:
    >>> spec = ExperimentSpec.from_dict({"seed": 3, "layers": [{"type": "planar"}]})
    >>> spec_from_link(spec_to_link(spec)) == spec
    True
"""

from __future__ import annotations

import base64
import binascii
import zlib

from flowviz.core.spec import MAX_SPEC_BYTES, ExperimentSpec
from flowviz.core.settings import SpecError

LINK_PARAMETER = "spec"  # the query key: ?spec=<packed experiment>
MAX_LINK_CHARS = 64_000  # browsers and proxies start refusing URLs somewhere past this


def spec_to_link(spec: ExperimentSpec) -> str:
    packed = zlib.compress(spec.to_json(indent=None).encode("utf-8"), level=9)
    return base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def spec_from_link(value: str) -> ExperimentSpec:
    """The experiment in a link's `spec` value, or SpecError saying why it cannot be read."""
    if len(value) > MAX_LINK_CHARS:
        raise SpecError("link", f"is {len(value)} characters long; at most {MAX_LINK_CHARS} are read")
    try:
        packed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        decoder = zlib.decompressobj()
        text = decoder.decompress(packed, MAX_SPEC_BYTES + 1)  # bounded: a small link cannot inflate to GBs
    except (binascii.Error, ValueError, zlib.error):
        raise SpecError("link", "is damaged (it does not decode); copy the whole link again") from None
    if len(text) > MAX_SPEC_BYTES or not decoder.eof:
        raise SpecError("link", "is damaged or too large; copy the whole link again")
    return ExperimentSpec.from_json(text)
