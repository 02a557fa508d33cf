r"""Read a user's uploaded file of 2-D points: CSV, TSV or whitespace-separated text, `.npy`, or JSON.

The extension picks the format; without one (or with one we don't know) the content does. Whatever is
wrong, `parse_points` raises a `PointsFileError` that names the line (or item) and column at fault and
says what to upload instead. It checks the upload limits before parsing and never unpickles anything.

Example:
    >>> parse_points(b"x,y\n0.5,1\n-2,3e-1\n", "moons.csv").tolist()
    [[0.5, 1.0], [-2.0, 0.3]]
    >>> parse_points(b"1,2\n3,abc\n", "bad.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    flowviz.core.pointfile.PointsFileError: line 2, column 2: 'abc' is not a number. Upload a file with two numeric ...
"""

from __future__ import annotations

import codecs
import io
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np

from flowviz.core.limits import LIMITS

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # base64 over the websocket must stay under its 20 MB message limit
MAX_ABS_VALUE = 1e6  # beyond this the flow's scales and float32 training fall apart
MIN_POINTS = 2

TEXT_EXTENSIONS = frozenset({".csv", ".tsv", ".txt", ".dat"})
# In order of preference when a line holds several: a ';' file may use ',' as its decimal mark.
DELIMITERS = ("\t", ";", ",")
_DELIMITER_NAMES = {";": "semicolons", ",": "commas", None: "spaces or tabs"}
_SNIFF_LINES = 20
_NPY_MAGIC = b"\x93NUMPY"

_HOW_TO = ("Upload a file with two numeric columns x and y, one point per row: CSV, TSV or whitespace-separated "
           "text (one header row is fine), a .npy array of shape (N, 2), or a JSON list of [x, y] pairs.")
_HOW_TO_NPY = ("Save a plain numeric array of shape (N, 2) with np.save('points.npy', np.asarray(points, dtype=float)) "
               "and upload that.")
_HOW_TO_FIX_ROW = "Fix or remove that row, then upload the file again."

# Where a value sits in the upload, for messages: (i, column) -> ("line 7, column 2", "'abc'").
Locate = Callable[[int, int], tuple[str, str]]


class PointsFileError(ValueError):
    """The uploaded file cannot be read as points; the message says what is wrong and what to do."""


def parse_points(data: bytes, filename: str = "") -> np.ndarray:
    """Return an (N, 2) float64 array of finite points, or raise PointsFileError."""
    data = bytes(data)
    if len(data) > MAX_UPLOAD_BYTES:
        raise _error(f"the file is {_size(len(data))}; at most {_size(MAX_UPLOAD_BYTES)} can be uploaded",
                     f"Upload at most {LIMITS.max_points:,} points, e.g. a random subsample.")
    if not data.strip():
        raise _error("the file is empty")
    kind = _format_of(data, filename)
    if kind == "npy":
        points, locate = _read_npy(data)
    else:
        text = _decode(data)
        if kind == "sniff":
            kind = "json" if text.lstrip()[:1] in ("[", "{") else "text"
        points, locate = _read_json(text) if kind == "json" else _read_text(text)
    return _checked(points, locate)


def _error(problem: str, advice: str = _HOW_TO) -> PointsFileError:
    end = "" if problem.endswith(".") else "."  # a shortened value already ends in "..."
    return PointsFileError(f"{problem}{end} {advice}")


def _format_of(data: bytes, filename: str) -> str:
    extension = PurePath(filename).suffix.lower()
    if extension == ".npy":
        return "npy"
    if extension == ".json":
        return "json"
    if extension in TEXT_EXTENSIONS:
        return "text"
    if data.startswith(_NPY_MAGIC):
        return "npy"
    if data.startswith(b"PK\x03\x04"):
        raise _error("the file is a zip archive (such as .npz, .xlsx or .zip), not a table of points",
                     "Export the points as CSV, or save one array with np.save, and upload that.")
    return "sniff"  # text or JSON: decided once decoded, so that a BOM or UTF-16 doesn't fool the sniffing


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes:,} bytes"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- text


def _decode(data: bytes) -> str:
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        kind = " (it looks like a NumPy .npy file: give it the .npy extension)" if data.startswith(_NPY_MAGIC) else ""
        raise _error(f"the file is not a text file in UTF-8 (or UTF-16 with a byte-order mark){kind}: byte "
                     f"{exc.start} (0x{exc.object[exc.start]:02x}), on line {line}, cannot be decoded",
                     "Save it as CSV in UTF-8, or as .npy or .json, and upload that.") from None
    if "\x00" in text:
        raise _error("the file contains NUL characters, so it is binary or in an encoding other than UTF-8",
                     "Save it as CSV in UTF-8, or as .npy or .json, and upload that.")
    return text


def _content_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) for every line that is neither blank nor a # comment."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(n, s) for n, line in enumerate(lines, 1) if (s := line.strip()) and not s.startswith("#")]


def _read_text(text: str) -> tuple[np.ndarray, Locate]:
    rows = _content_lines(text)
    if not rows:
        raise _error("the file has no data: only blank lines and # comments")
    if _is_header(rows[0][1]):
        rows = rows[1:]
        if not rows:
            raise _error("the file has a header row but no data rows")
    _check_count(len(rows))
    delimiter = _sniff_delimiter([line for _, line in rows[:_SNIFF_LINES]])
    points = _parse_fast(rows, delimiter)
    if points is None:
        points = _parse_slow(rows, delimiter)

    def locate(i: int, column: int) -> tuple[str, str]:
        line_number, line = rows[i]
        return f"line {line_number}, column {column + 1}", repr(_short(_split(line, delimiter)[column]))

    return points, locate


def _is_header(line: str) -> bool:
    # Decided before the delimiter is known, so that a header like "x, y" doesn't sway the sniffing.
    fields = [f.strip("\"'") for f in re.split(r"[\s,;]+", line)]
    fields = [f for f in fields if f]
    return bool(fields) and not any(_is_number(f) for f in fields)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _sniff_delimiter(sample: Sequence[str]) -> str | None:
    """The delimiter found on the most sample lines (ties go to the earlier in DELIMITERS); None: whitespace."""
    counts = {d: sum(d in line for line in sample) for d in DELIMITERS}
    best = max(DELIMITERS, key=counts.__getitem__)
    # Tabs split like any run of whitespace: hand-edited TSV files mix tabs and spaces, and an empty
    # field between two tabs could not be a point anyway.
    return best if counts[best] and best != "\t" else None


def _split(line: str, delimiter: str | None) -> list[str]:
    fields = [f.strip().strip('"') for f in line.split(delimiter)]
    while fields and not fields[-1]:  # spreadsheets often leave a trailing delimiter
        fields.pop()
    return fields


def _parse_fast(rows: Sequence[tuple[int, str]], delimiter: str | None) -> np.ndarray | None:
    """numpy's C parser for the common clean file; None when it can't, and `_parse_slow` finds out why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points = np.loadtxt([line for _, line in rows], delimiter=delimiter, comments=None, ndmin=2,
                                dtype=np.float64)
    except Exception:  # noqa: BLE001 (any failure only means "look closer": the slow path is the authority)
        return None
    return points if points.shape == (len(rows), 2) else None


def _parse_slow(rows: Sequence[tuple[int, str]], delimiter: str | None) -> np.ndarray:
    points = np.empty((len(rows), 2))
    for i, (line_number, line) in enumerate(rows):
        fields = _split(line, delimiter)
        if len(fields) != 2:
            raise _column_count_error(line_number, len(fields), delimiter)
        for column, field in enumerate(fields):
            try:
                points[i, column] = float(field)
            except ValueError:
                raise _error(f"line {line_number}, column {column + 1}: {_not_a_number(field)}") from None
    return points


def _column_count_error(line_number: int, count: int, delimiter: str | None) -> PointsFileError:
    if count == 0:
        return _error(f"line {line_number} has no values")
    columns = f"{count} column{'s' if count != 1 else ''} (separated by {_DELIMITER_NAMES[delimiter]})"
    advice = _HOW_TO
    if count > 2:
        advice = ("Keep only the x and y columns (if the first column numbers the rows, export without it, e.g. "
                  "pandas' to_csv(index=False)), then upload the file again.")
    return _error(f"line {line_number} has {columns}, but exactly two are needed: x and y", advice)


def _not_a_number(field: str) -> str:
    if not field:
        return "the value is empty"
    if re.fullmatch(r"[+-]?\d*,\d+", field):
        return f"{_short(field)!r} is not a number (use a point as the decimal mark: {field.replace(',', '.')})"
    return f"{_short(field)!r} is not a number"


# ---------------------------------------------------------------------------------------------- JSON


def _read_json(text: str) -> tuple[np.ndarray, Locate]:
    try:
        value = json.loads(text)
    except RecursionError:
        raise _error("the JSON is nested too deeply to be a list of points") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits to convert
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise _error(f"the file is not valid JSON{where}: {_short(reason, 80)}") from None
    if not isinstance(value, list):
        raise _error('the JSON must be a list of [x, y] pairs or {"x": ..., "y": ...} objects, '
                     f"not {_json_kind(value)}")
    _check_count(len(value))
    points = np.empty((len(value), 2))
    for i, item in enumerate(value):
        points[i] = _json_point(i, item)

    def locate(i: int, column: int) -> tuple[str, str]:
        return f"item [{i}], {'xy'[column]}", repr(float(points[i, column]))

    return points, locate


def _json_point(i: int, item: Any) -> tuple[float, float]:
    if isinstance(item, dict):
        missing = [key for key in ("x", "y") if key not in item]
        if missing:
            raise _error(f"item [{i}] is an object without {' or '.join(repr(k) for k in missing)}")
        pair = [item["x"], item["y"]]
    elif isinstance(item, list):
        if len(item) != 2:
            raise _error(f"item [{i}] has {len(item)} value{'s' if len(item) != 1 else ''}, "
                         "but exactly two are needed: x and y")
        pair = item
    else:
        raise _error(f"item [{i}] is {_json_kind(item)}, not an [x, y] pair")
    x, y = (_json_number(f"item [{i}], {name}", v) for name, v in zip("xy", pair))
    return x, y


def _json_number(place: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # bool is an int to Python, not to us
        raise _error(f"{place}: {_json_kind(value)} is not a number")
    if isinstance(value, int) and abs(value) > MAX_ABS_VALUE:  # float() overflows on huge integers
        raise _too_large_error(place, _short(str(value)))
    return float(value)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {json.dumps(_short(value))}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return _short(repr(value))


# ----------------------------------------------------------------------------------------------- npy


def _read_npy(data: bytes) -> tuple[np.ndarray, Locate]:
    if not data.startswith(_NPY_MAGIC):
        if data[:1] == b"\x80":
            raise _error("the file is a Python pickle, which is never loaded because unpickling can run code",
                         _HOW_TO_NPY)
        raise _error("the file is not a .npy file: it does not start with the NumPy header", _HOW_TO_NPY)
    shape, dtype = _npy_header(data)
    # Checked before loading, so that a header that promises a huge array allocates nothing.
    if dtype.hasobject:
        raise _error("the .npy file holds Python objects (saved with allow_pickle=True), which are never loaded "
                     "because unpickling can run code", _HOW_TO_NPY)
    if dtype.kind not in "iuf":
        raise _error(f"the .npy array holds {_short(str(dtype))} values, not integers or floats", _HOW_TO_NPY)
    if len(shape) != 2 or shape[1] != 2:
        raise _error(f"the .npy array has shape {shape}, but it must have shape (N, 2): one row per point, "
                     "columns x and y", _HOW_TO_NPY)
    _check_count(shape[0])
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 (damaged bytes make numpy raise many kinds; all mean one thing to the user)
        raise _error(f"the .npy file is damaged: {_short(str(exc), 80)}", _HOW_TO_NPY) from None
    points = np.ascontiguousarray(array, dtype=np.float64)

    def locate(i: int, column: int) -> tuple[str, str]:
        return f"array[{i}, {column}]", repr(float(points[i, column]))

    return points, locate


def _npy_header(data: bytes) -> tuple[tuple[int, ...], np.dtype]:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported format version {version[0]}.{version[1]}")
    except Exception as exc:  # noqa: BLE001 (numpy's header reader raises several kinds of error on damaged bytes)
        raise _error(f"the .npy header is damaged or unsupported: {_short(str(exc), 80)}", _HOW_TO_NPY) from None
    return tuple(shape), dtype


# -------------------------------------------------------------------------------------- every format


def _check_count(n_points: int) -> None:
    if n_points > LIMITS.max_points:
        raise _error(f"the file has {n_points:,} points, but at most {LIMITS.max_points:,} are allowed",
                     f"Upload at most {LIMITS.max_points:,} points, e.g. a random subsample.")


def _too_large_error(place: str, shown: str) -> PointsFileError:
    limit = f"{MAX_ABS_VALUE:.0e}".replace("e+0", "e").replace("e+", "e")  # 1e6, not 1e+06
    return _error(f"{place}: {shown} is beyond ±{limit}, which would break training",
                  "Rescale the data (e.g. subtract each column's mean and divide by its standard deviation) "
                  "and upload it again.")


def _checked(points: np.ndarray, locate: Locate) -> np.ndarray:
    if len(points) < MIN_POINTS:
        raise _error(f"the file has {len(points)} point{'s' if len(points) != 1 else ''}, "
                     f"but at least {MIN_POINTS} are needed")
    _check_count(len(points))
    # argwhere lists positions row by row, so the first is the earliest in the file.
    not_finite = np.argwhere(~np.isfinite(points))
    if len(not_finite):
        place, shown = locate(*map(int, not_finite[0]))
        raise _error(f"{place}: {shown} is not a finite number (NaN and infinity are not allowed)", _HOW_TO_FIX_ROW)
    too_large = np.argwhere(np.abs(points) > MAX_ABS_VALUE)
    if len(too_large):
        raise _too_large_error(*locate(*map(int, too_large[0])))
    return points
