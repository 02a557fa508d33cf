"""Shareable links: a whole experiment, seed included, packed into one URL query value.

The spec's compact JSON is deflated and written in URL-safe base64, so a link stays short enough to
paste (a ten-layer experiment is a few hundred characters) and opening it rebuilds exactly the same
starting state. `spec_from_link` is strict: a tampered or truncated link raises `SpecError`.
`read_link` is what the app uses: it keeps every sound field, puts defaults in place of the wrong
ones, and lists what it ignored.

Example:
    >>> spec = ExperimentSpec.from_dict({"seed": 3, "layers": [{"type": "planar"}]})
    >>> spec_from_link(spec_to_link(spec)) == spec
    True
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from typing import Any

from flowviz.core.settings import SpecError
from flowviz.core.spec import MAX_SPEC_BYTES, ExperimentSpec

LINK_PARAMETER = "spec"  # the query key: ?spec=<packed experiment>
MAX_LINK_CHARS = 64_000  # browsers and proxies start refusing URLs somewhere past this


def spec_to_link(spec: ExperimentSpec) -> str:
    packed = zlib.compress(spec.to_json(indent=None).encode("utf-8"), level=9)
    return base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def spec_from_link(value: str) -> ExperimentSpec:
    """The experiment in a link's `spec` value, or SpecError saying why it cannot be read."""
    return ExperimentSpec.from_json(_unpack(value))


def read_link(value: str) -> tuple[ExperimentSpec, list[str]]:
    """A link's experiment, forgiving: each field that is wrong falls back to its default.

    Returns the spec and one message per ignored field (empty when the link was sound). A link that
    does not decode at all gives the default experiment and says so. A tampered link therefore
    opens what it can and tells the user what it could not.
    """
    try:
        data = json.loads(_unpack(value))
    except SpecError as error:
        return ExperimentSpec(), [str(error)]
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return ExperimentSpec(), ["link: its experiment is not valid JSON; copy the whole link again"]
    if not isinstance(data, dict):
        return ExperimentSpec(), ["link: its experiment is not a JSON object"]
    ignored: list[str] = []
    for _ in range(_MAX_REPAIRS):
        try:
            return ExperimentSpec.from_dict(data), ignored
        except SpecError as error:
            ignored.append(str(error))
            if not _drop(data, _path(error.field)):
                break
    return ExperimentSpec(), ignored + ["link: too much of it was wrong; showing the default experiment"]


_MAX_REPAIRS = 200


def _path(field: str) -> list[str | int]:
    """"layers[2].settings.bins" -> ["layers", 2, "settings", "bins"]."""
    return [int(part[1:-1]) if part.startswith("[") else part for part in re.findall(r"\[\d+\]|[^.\[\]]+", field)]


def _drop(data: Any, path: list[str | int]) -> bool:
    """Remove what `path` names so its default applies; if it is already gone (the error is about
    its absence, or about a combination), remove the enclosing part instead. False: nothing left."""
    while path:
        *parent_path, last = path
        parent = data
        for key in parent_path:
            try:
                parent = parent[key]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict) and isinstance(last, str) and last in parent:
            if last == "type" and parent_path and isinstance(parent_path[-1], int):
                path = parent_path  # a layer with an unknown type: drop the layer
                continue
            del parent[last]
            return True
        if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
            del parent[last]
            return True
        path = parent_path
    return False


def _unpack(value: str) -> bytes:
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
    return text
