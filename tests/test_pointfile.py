"""Uploaded point files: every format round-trips, and every bad file gets a message that says where and why."""

from __future__ import annotations

import doctest
import io
import json
import pickle
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowviz.core import pointfile
from flowviz.core.limits import LIMITS, Limits
from flowviz.core.pointfile import MAX_UPLOAD_BYTES, PointsFileError, parse_points

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
point_arrays = st.integers(2, 40).flatmap(lambda n: arrays(np.float64, (n, 2), elements=finite))


def savetxt(points: np.ndarray, delimiter: str = ",", header: str = "", fmt: str = "%.17g") -> bytes:
    stream = io.BytesIO()
    np.savetxt(stream, points, fmt=fmt, delimiter=delimiter, header=header, comments="")
    return stream.getvalue()


def npy(array: np.ndarray, **kwargs) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, **kwargs)
    return stream.getvalue()


def error_of(data: bytes, filename: str = "") -> str:
    with pytest.raises(PointsFileError) as info:
        parse_points(data, filename)
    message = str(info.value)
    assert "upload" in message.lower(), f"the message doesn't say what to do: {message}"
    return message


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("delimiter", "filename"), [(",", "p.csv"), ("\t", "p.tsv"), (" ", "p.txt"), (";", "p.dat"),
                                                     (",", ""), ("\t", "points"), (" ", "p.xy")])
@pytest.mark.parametrize("header", [False, True])
@given(points=point_arrays)
def test_text_round_trips(delimiter, filename, header, points):
    data = savetxt(points, delimiter, delimiter.join(["x", "y"]) if header else "")
    parsed = parse_points(data, filename)
    assert parsed.dtype == np.float64 and parsed.shape == points.shape
    np.testing.assert_array_equal(parsed, points)


@given(points=point_arrays, bom=st.booleans(), crlf=st.booleans())
def test_bom_crlf_comments_and_blank_lines(points, bom, crlf):
    lines = ["# exported by a script", "", "x,y", *(f"{x!r},{y!r}" for x, y in points.tolist()), "# the end", "  "]
    text = ("\r\n" if crlf else "\n").join(lines)
    data = ("\ufeff" if bom else "").encode() + text.encode()
    np.testing.assert_array_equal(parse_points(data, "p.csv"), points)


@given(points=point_arrays)
def test_utf16_with_bom_is_read(points):
    data = savetxt(points, "\t", "x\ty").decode().encode("utf-16")
    np.testing.assert_array_equal(parse_points(data, "p.tsv"), points)


def test_spreadsheet_quirks_quotes_trailing_delimiters_and_spaces():
    data = b'"x","y"\r\n"1.5","-2"\r\n3 , 4,\r\n  5e-1,6  \r\n'
    np.testing.assert_array_equal(parse_points(data, "p.csv"), [[1.5, -2.0], [3.0, 4.0], [0.5, 6.0]])


def test_whitespace_runs_and_mixed_tabs():
    data = b"x   y\n 1 \t 2\n3\t\t4\n\n5      6\n"
    np.testing.assert_array_equal(parse_points(data, "p.txt"), [[1, 2], [3, 4], [5, 6]])


def test_a_header_with_commas_does_not_decide_the_delimiter():
    np.testing.assert_array_equal(parse_points(b"x, y\n1 2\n3 4\n", "p.txt"), [[1, 2], [3, 4]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_round_trips(dtype, order):
    points = np.asarray(np.random.default_rng(0).normal(size=(50, 2)) * 100, dtype=dtype, order=order)
    parsed = parse_points(npy(points), "p.npy")
    assert parsed.dtype == np.float64 and parsed.flags.c_contiguous
    np.testing.assert_array_equal(parsed, points.astype(np.float64))


@given(points=point_arrays)
def test_npy_round_trips_any_finite_array(points):
    np.testing.assert_array_equal(parse_points(npy(points), "p.npy"), points)


@given(points=point_arrays, objects=st.booleans())
def test_json_round_trips(points, objects):
    items = [{"x": x, "y": y} for x, y in points.tolist()] if objects else points.tolist()
    np.testing.assert_array_equal(parse_points(json.dumps(items).encode(), "p.json"), points)


def test_json_integers_and_extra_keys():
    data = b'[{"x": 1, "y": 2, "label": "a"}, {"y": -3.5, "x": 0}]'
    np.testing.assert_array_equal(parse_points(data, "p.json"), [[1, 2], [0, -3.5]])


@pytest.mark.parametrize("filename", ["", "upload", "points.xy", "POINTS.BIN"])
def test_content_decides_when_the_extension_does_not(filename):
    points = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert np.array_equal(parse_points(npy(points), filename), points)
    assert np.array_equal(parse_points(b"\xef\xbb\xbf  [[1, 2], [3, 4]]", filename), points)
    assert np.array_equal(parse_points(b"1 2\n3 4\n", filename), points)


def test_extension_is_case_insensitive():
    assert parse_points(b"1,2\n3,4\n", "P.CSV").shape == (2, 2)
    assert parse_points(npy(np.zeros((3, 2))), "P.NPY").shape == (3, 2)


def test_a_full_size_csv_parses_exactly():
    points = np.random.default_rng(1).normal(size=(LIMITS.max_points, 2))
    data = savetxt(points, ",", "x,y", fmt="%.18e")
    np.testing.assert_array_equal(parse_points(data, "big.csv"), points)


def test_module_example_runs():
    flags = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL
    assert doctest.testmod(pointfile, optionflags=flags).failed == 0


# ------------------------------------------------------------------------------------------ text errors


@pytest.mark.parametrize(("data", "expected"), [
    (b"1\n2\n3\n", ["line 1 has 1 column", "exactly two"]),
    (b"x,y\n1,2\n3\n", ["line 3 has 1 column"]),
    (b"x,y,z\n1,2,3\n4,5,6\n", ["line 2 has 3 columns", "separated by commas", "exactly two", "index=False"]),
    (b"1\t2\n3\t4\t5\n", ["line 2 has 3 columns", "separated by spaces or tabs"]),
    (b"1;2\n3;4;5\n", ["line 2 has 3 columns", "separated by semicolons"]),
    (b"1 2\n3 4\n5 6 7 8\n", ["line 3 has 4 columns", "separated by spaces or tabs"]),
    (b"1,2\n,,\n", ["line 2 has no values"]),
])
def test_wrong_column_counts_name_the_line(data, expected):
    message = error_of(data, "p.csv")
    for part in expected:
        assert part in message


def test_text_among_numbers_names_line_and_column():
    lines = ["# comment", "x,y", "1,2", "", "3,4", "5,6", "7,abc", "8,9"]
    assert "line 7, column 2: 'abc' is not a number" in error_of("\n".join(lines).encode(), "p.csv")


def test_line_numbers_count_comments_blank_lines_and_crlf():
    data = b"\xef\xbb\xbf# c\r\n\r\nx,y\r\n1,2\r\nzz,3\r\n4,5\r\n"
    assert "line 5, column 1: 'zz' is not a number" in error_of(data, "p.csv")


def test_a_second_header_row_is_an_error():
    assert "line 3, column 1: 'x' is not a number" in error_of(b"x,y\n1,2\nx,y\n3,4\n", "p.csv")


def test_an_empty_field_is_named():
    assert "line 2, column 1: the value is empty" in error_of(b"1,2\n,3\n4,5\n", "p.csv")


@pytest.mark.parametrize("data", [b"1;2,5\n3;4\n", b"1\t2,5\n3\t4\n"])
def test_decimal_comma_gets_a_hint(data):
    assert "line 1, column 2: '2,5' is not a number (use a point as the decimal mark: 2.5)" in error_of(data, "p.csv")


@pytest.mark.parametrize(("data", "expected"), [
    (b"1,2\n3,4\nnan,5\n", "line 3, column 1: 'nan' is not a finite number"),
    (b"1,2\n3,-inf\n", "line 2, column 2: '-inf' is not a finite number"),
    (b"1,2\n3,1e999\n", "line 2, column 2: '1e999' is not a finite number"),
    (b"1 2\n3 Infinity\n", "line 2, column 2: 'Infinity' is not a finite number"),
])
def test_nan_and_inf_name_the_row(data, expected):
    assert expected in error_of(data, "p.txt")


def test_huge_values_suggest_rescaling():
    message = error_of(b"x,y\n1,2\n3e7,4\n", "p.csv")
    assert "line 3, column 1: '3e7' is beyond ±1e6" in message and "Rescale" in message


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "empty"),
    (b" \n\r\n\t", "empty"),
    (b"# only a comment\n\n# and another\n", "no data"),
    (b"x,y\n", "header row but no data rows"),
    (b"x,y\n1,2\n", "the file has 1 point, but at least 2 are needed"),
    (b"\xef\xbb\xbf", "no data"),
])
def test_empty_files_and_single_points_are_refused(data, expected):
    assert expected in error_of(data, "p.csv")


@pytest.mark.parametrize(("data", "filename", "where"), [
    (b"1,2\n\xff\xfe\xfd,3\n", "p.csv", "byte 4 (0xff), on line 2"),
    (b"\x80abc", "", "byte 0 (0x80), on line 1"),
    (b"\xef\xbb\xbf1,2\n\xc3(\n", "p.txt", "(0xc3), on line 2"),
])
def test_undecodable_bytes_say_it_is_not_utf8(data, filename, where):
    message = error_of(data, filename)
    assert "not a text file in UTF-8" in message and where in message


def test_nul_bytes_are_binary():
    assert "NUL" in error_of("1,2\n3,4\n".encode("utf-16-le"), "p.csv")


def test_npy_uploaded_as_csv_gets_a_hint():
    assert "give it the .npy extension" in error_of(npy(np.zeros((3, 2))), "p.csv")


def test_zip_archives_are_named():
    stream = io.BytesIO()
    np.savez(stream, points=np.zeros((3, 2)))
    assert "zip archive" in error_of(stream.getvalue(), "p.npz")


# ------------------------------------------------------------------------------------------------ limits


def test_too_many_rows_at_the_real_limit():
    rows = LIMITS.max_points + 1
    data = b"x,y\n" + b"1,2\n" * rows
    message = error_of(data, "p.csv")
    assert f"{rows:,} points" in message and f"at most {LIMITS.max_points:,}" in message


@pytest.mark.parametrize("make", [
    lambda: savetxt(np.zeros((11, 2))),
    lambda: npy(np.zeros((11, 2))),
    lambda: json.dumps(np.zeros((11, 2)).tolist()).encode(),
], ids=["csv", "npy", "json"])
def test_too_many_points_in_every_format(monkeypatch, make):
    monkeypatch.setattr(pointfile, "LIMITS", Limits(max_points=10))
    data = make()
    filename = {b"\x93": "p.npy", b"[": "p.json"}.get(data[:1], "p.csv")
    assert "11 points, but at most 10 are allowed" in error_of(data, filename)
    monkeypatch.setattr(pointfile, "LIMITS", Limits(max_points=11))
    assert parse_points(data, filename).shape == (11, 2)


def test_too_many_bytes_is_refused_before_parsing():
    data = b"1,2\n" * (MAX_UPLOAD_BYTES // 4) + b"\n"
    message = error_of(data, "p.csv")
    assert f"{MAX_UPLOAD_BYTES // 2**20}.0 MiB can be uploaded" in message


def test_byte_limit_reads_the_module_constant(monkeypatch):
    monkeypatch.setattr(pointfile, "MAX_UPLOAD_BYTES", 10)
    assert "at most 10 bytes" in error_of(b"1,2\n3,4\n5,6\n", "p.csv")


# ------------------------------------------------------------------------------------------------ npy


class RecordsUnpickling:
    unpickled: ClassVar[list[str]] = []  # shared on purpose: records any unpickling anywhere

    def __reduce__(self):
        return (RecordsUnpickling.unpickled.append, ("unpickled!",))


def test_pickled_object_array_is_refused_without_unpickling():
    array = np.empty((2, 2), dtype=object)
    array[:] = RecordsUnpickling()
    data = npy(array, allow_pickle=True)
    for filename in ("p.npy", ""):
        message = error_of(data, filename)
        assert "Python objects" in message and "np.save" in message
    assert RecordsUnpickling.unpickled == []


def test_a_plain_pickle_named_npy_is_refused_without_unpickling():
    data = pickle.dumps(RecordsUnpickling())
    assert "Python pickle" in error_of(data, "p.npy")
    assert RecordsUnpickling.unpickled == []


@pytest.mark.parametrize(("array", "expected"), [
    (np.zeros((4, 2, 2)), "shape (4, 2, 2)"),
    (np.zeros(8), "shape (8,)"),
    (np.zeros((5, 3)), "shape (5, 3)"),
    (np.zeros((2, 5)), "shape (2, 5)"),
    (np.zeros((3, 2), dtype=bool), "holds bool values"),
    (np.zeros((3, 2), dtype=complex), "holds complex128 values"),
    (np.array([["1", "2"], ["3", "4"]]), "holds <U1 values"),
    (np.zeros(3, dtype=[("x", "f8"), ("y", "f8")]), "values, not integers or floats"),
    (np.zeros((1, 2)), "1 point, but at least 2"),
    (np.zeros((0, 2)), "0 points, but at least 2"),
])
def test_npy_with_the_wrong_shape_or_type(array, expected):
    assert expected in error_of(npy(array), "p.npy")


def test_npy_non_finite_and_huge_values_name_the_index():
    points = np.zeros((5, 2))
    points[3, 1] = np.nan
    assert "array[3, 1]: nan is not a finite number" in error_of(npy(points), "p.npy")
    points[3, 1] = -2e6
    assert "array[3, 1]: -2000000.0 is beyond ±1e6" in error_of(npy(points), "p.npy")


def test_damaged_npy_files():
    data = npy(np.zeros((100, 2)))
    assert "damaged" in error_of(data[:-5], "p.npy")
    assert "header is damaged" in error_of(data[:20], "p.npy")
    assert "not a .npy file" in error_of(b"1,2\n3,4\n", "p.npy")


def test_a_header_promising_a_huge_array_allocates_nothing():
    header = npy(np.zeros((2, 2)))
    data = header.replace(b"(2, 2)", b"(10000000000000, 2)")
    assert "10,000,000,000,000 points" in error_of(data, "p.npy")


# ----------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(("text", "expected"), [
    ("[" * 100_000, "nested too deeply"),
    ("[[1, 2], [3, 4]", "not valid JSON at line 1"),
    ('{"points": [[1, 2]]}', "must be a list of [x, y] pairs"),
    ("[[1, 2], [3, true]]", "item [1], y: true is not a number"),
    ('[[1, 2], ["3", 4]]', 'item [1], x: the string "3" is not a number'),
    ("[[1, 2], [null, 4]]", "item [1], x: null is not a number"),
    ("[[1, 2], [[3], 4]]", "item [1], x: a list is not a number"),
    ("[[1, 2], [3, 4, 5]]", "item [1] has 3 values, but exactly two are needed"),
    ("[[1, 2], [3]]", "item [1] has 1 value, but exactly two are needed"),
    ("[[1, 2], 7]", "item [1] is 7, not an [x, y] pair"),
    ('[{"x": 1, "y": 2}, {"x": 1}]', "item [1] is an object without 'y'"),
    ("[[1, 2], [3, NaN]]", "item [1], y: nan is not a finite number"),
    ("[[1, 2], [-Infinity, 4]]", "item [1], x: -inf is not a finite number"),
    ("[[1, 2], [1e400, 4]]", "item [1], x: inf is not a finite number"),
    ("[[1, 2], [1" + "0" * 400 + ", 4]]", "item [1], x: 1000"),
    ("[[1, 2], [2e6, 4]]", "item [1], x: 2000000.0 is beyond ±1e6"),
    ("[[1, 2]]", "1 point, but at least 2"),
    ("[]", "0 points, but at least 2"),
    ("[[1, 2], [1" + "0" * 5000 + ", 4]]", "not valid JSON"),
])
def test_bad_json_names_the_item(text, expected):
    assert expected in error_of(text.encode(), "p.json")


# ---------------------------------------------------------------------------------------------- fuzzing


def assert_points_or_error(data: bytes, filename: str) -> None:
    try:
        points = parse_points(data, filename)
    except PointsFileError:
        return
    assert points.dtype == np.float64 and points.ndim == 2 and points.shape[1] == 2 and len(points) >= 2
    assert np.isfinite(points).all() and (np.abs(points) <= pointfile.MAX_ABS_VALUE).all()


filenames = st.sampled_from(["", "p.csv", "p.tsv", "p.txt", "p.npy", "p.json", "p.bin"])


@given(data=st.binary(max_size=512), filename=filenames)
def test_arbitrary_bytes_parse_or_raise_points_file_error(data, filename):
    assert_points_or_error(data, filename)


@given(text=st.text(alphabet="0123456789.,;\t -+eE#\n\r\"xyinfa[]{}:", max_size=200), filename=filenames)
def test_arbitrary_near_text_parses_or_raises_points_file_error(text, filename):
    assert_points_or_error(text.encode(), filename)


@given(prefix=st.binary(max_size=64), filename=st.sampled_from(["p.npy", ""]))
def test_mangled_npy_parses_or_raises_points_file_error(prefix, filename):
    data = npy(np.arange(8.0).reshape(4, 2))
    assert_points_or_error(data[:10] + prefix + data[10 + len(prefix):], filename)
