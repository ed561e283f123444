"""Cells as Azure ML's files hold them and as readers take them back: formulas neutralised but numbers left
alone, floats in their shortest round-trip text, nested values as JSON, missing values empty, carriage returns
quoted, header names never taken for ours, timestamps that never round into the next second."""
import csv
import datetime as dt
import io
import math

import numpy as np
import pandas as pd
import pytest

from mdc_middleware.records.csv_encoding import encode, header_line
from mdc_middleware.records.record import META_COLUMNS, Record, format_timestamp, unreserved

from tests.helpers import TARGET


def cells(data, columns=("x",), neutralize=True) -> list:
    """The data cells of each row encode() writes, read back by the csv module."""
    record = Record(TARGET, data, tuple(columns), "cid", 1_764_000_000.0, "rid", rows=len(data))
    count, text = encode(record, columns, neutralize)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert count == len(rows)
    assert all(len(row) == len(columns) + len(META_COLUMNS) for row in rows)
    return [row[:len(columns)] for row in rows]


@pytest.mark.parametrize("value, written", [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1+2", "'+1+2"), ("@cmd", "'@cmd"), ("-x", "'-x"), ("\tx", "'\tx"),
    ("-1.5", "-1.5"), ("+3e10", "+3e10"), ("plain", "plain"),
])
def test_formulas_are_neutralised_and_signed_numbers_are_not(value, written):
    assert cells([[value]]) == [[written]]
    assert cells([[value]], neutralize=False) == [[value]]


def test_numbers_nested_values_and_missing_values():
    row = [0.1, np.float32(0.1), 10**20, [1, np.int64(2)], {"k": np.array([1.5])}, None, pd.NA, float("nan"),
           True, b"bytes"]
    columns = tuple(f"c{i}" for i in range(len(row)))
    assert cells([row], columns) == [["0.1", "0.1", str(10**20), "[1,2]", '{"k":[1.5]}', "", "", "", "True",
                                      "bytes"]]


@pytest.mark.parametrize("data", [np.array([[0.1, 2.0], [1e-300, -0.0]]),
                                  pd.DataFrame({"a": [0.1, 1e-300], "b": [2.0, -0.0]})])
def test_numeric_arrays_and_frames_write_the_shortest_text_that_reads_back_the_same(data):
    written = cells(data, ("a", "b"))
    assert written == [["0.1", "2.0"], ["1e-300", "-0.0"]]
    assert [[float(v) for v in row] for row in written] == np.asarray(data).tolist()


def test_a_carriage_return_in_a_cell_is_quoted_so_readers_keep_the_row_whole():
    record = Record(TARGET, [["a\rb", "c"]], ("x", "y"), "cid", 1_764_000_000.0, "rid", rows=1)
    text = encode(record, ("x", "y"))[1]
    assert '"a\rb"' in text
    assert pd.read_csv(io.StringIO(text), header=None, dtype=str).iloc[0, 0] == "a\rb"


def test_header_names_that_look_like_ours_are_renamed_not_repeated():
    columns = unreserved(["$aml_request_id", "_$aml_request_id", "$mdc_header_x", "a"])
    assert columns == ("__$aml_request_id", "_$aml_request_id", "$mdc_header_x", "a")
    names = next(csv.reader(io.StringIO(header_line(columns))))
    assert len(names) == len(set(names)) == len(columns) + len(META_COLUMNS)


def test_timestamps_are_truncated_to_the_microsecond_never_rounded_into_the_next_day():
    """The day a row's timestamp names is the day folder it is written in (``timestamp // 86400``)."""
    midnight = 1_764_028_800.0
    just_before = math.nextafter(midnight, 0)  # the last float before midnight
    assert format_timestamp(just_before) == "2025-11-24T23:59:59.999999Z"
    assert format_timestamp(midnight) == "2025-11-25T00:00:00.000000Z"
    for timestamp in (just_before, midnight, midnight - 1e-6, midnight + 0.5e-6, 1e9 + 0.9999999):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=int(timestamp // 86_400))
        assert format_timestamp(timestamp).startswith(day.isoformat())
@pytest.mark.parametrize("ids", [("cid", "rid"), ('a,"b', "=1+1"), ("line\nbreak", ""), ("@x", "tab\tx"),
                                 ("car\rriage", "\r"), ("cr\r\nlf", "x\ry")])
def test_rows_of_numbers_and_other_rows_end_with_the_same_correlation_cells(ids):
    """The numbers fast path writes the correlation cells itself; they must match the csv path's, byte for byte."""
    from mdc_middleware.records.csv_encoding import encode

    numbers = Record(TARGET, [[1.5]], ("x",), ids[0], 1_764_000_000.25, ids[1], rows=1)
    text = Record(TARGET, [["1.5"]], ("x",), ids[0], 1_764_000_000.25, ids[1], rows=1)
    assert encode(numbers, ("x",))[1] == encode(text, ("x",))[1]


