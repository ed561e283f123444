"""What collect() keeps of its input: the values as they were when it was called, whatever the scoring code
does with its objects afterwards, and the rows and columns the README says each shape holds."""
import collections

import numpy as np
import pandas as pd
import pytest

from mdc_middleware.records.snapshot import (count_rows, infer_columns, rows_as_lists, snapshot, text_columns,
                                             uncollectable)


@pytest.mark.parametrize("make", [
    lambda: pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}),
    lambda: pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
    lambda: np.array([[1.0, 3.0], [2.0, 4.0]]),
    lambda: [[1.0, 3.0], [2.0, 4.0]],
])
def test_changes_after_collect_do_not_reach_what_was_kept(make):
    data = make()
    kept = snapshot(data)
    before = list(rows_as_lists(kept, ("a", "b")))
    if isinstance(data, pd.DataFrame):
        data.iloc[0, 0] = 99.0
        data["a"] = -1.0
    else:
        data[0][0] = 99.0
    assert list(rows_as_lists(kept, ("a", "b"))) == before


@pytest.mark.parametrize("data, columns, rows", [
    ([[1, 2], [3, 4]], None, 2),
    ([1, 2, 3], ("a", "b", "c"), 1),            # one row of declared width
    ([1, 2, 3], None, 3),                       # a column
    (np.array([1, 2, 3]), ("a", "b", "c"), 1),
    (np.float64(1.5), None, 1),
    ({"data": [[1, 2], [3, 4]]}, None, 2),      # score.py's envelope
    ({"a": [1, 2, 3], "b": [4, 5, 6]}, None, 3),  # columns
    ({"a": 1, "b": 2}, None, 1),                # one record
    (pd.Series([0.1, 0.2], name="score"), None, 2),
    (pd.DataFrame({"a": [1, 2]}).iloc[0], None, 1),  # a row, labelled by names
    ({1, 2}, None, 2),
])
def test_rows_of_each_shape(data, columns, rows):
    assert count_rows(snapshot(data), columns) == rows


def test_columns_of_undeclared_data():
    assert infer_columns([[1, 2, 3]], "feature") == ("feature_0", "feature_1", "feature_2")
    assert infer_columns([{"a": 1}, {"b": 2, "a": 3}], "feature") == ("a", "b")
    assert infer_columns(np.zeros((2, 2, 2)), "prediction") == tuple(f"prediction_{i}" for i in range(4))
    assert infer_columns([0.5], "prediction") == ("prediction",)


def test_dict_rows_are_aligned_by_name_with_missing_cells_empty():
    assert list(rows_as_lists([{"b": 2, "a": 1}, {"a": 3}], ("a", "b"))) == [[1, 2], [3, None]]


def test_text_columns_are_those_holding_text_in_the_first_row():
    assert text_columns([["00501", 1, None]], ("zip", "n", "x")) == frozenset({"zip"})
    assert text_columns(np.zeros((1, 2)), ("a", "b")) == frozenset()


def test_an_iterator_is_left_alone_for_the_scoring_code():
    assert uncollectable(iter([1, 2])) == "iterator"
    assert uncollectable(map(str, [1])) == "iterator"
    assert uncollectable(collections.deque([1])) is None
