import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdc_middleware import PayloadMismatch, Schema


def _nested(value, depth: int) -> dict:
    for _ in range(depth):
        value = {"x": value}
    return value


SHAPES = [
    ({"data": [[1, 2], [3, 4]]}, None, (("feature_0", "feature_1"), [[1, 2], [3, 4]])),
    ({"data": [[1, 2], [3, 4]]}, ["a", "b"], (("a", "b"), [[1, 2], [3, 4]])),
    ({"data": [1, 2]}, ["a", "b"], (("a", "b"), [[1, 2]])),
    ({"input_data": {"columns": ["b", "a"], "index": [0], "data": [[2, 1]]}}, ["a", "b"], (("a", "b"), [[1, 2]])),
    ({"input_data": {"columns": ["b", "a"], "index": [0], "data": [[2, 1]]}}, None, (("b", "a"), [[2, 1]])),
    ([{"a": 1, "b": 2}, {"a": 3}], None, (("a", "b"), [[1, 2], [3, None]])),
    ([{"a": 1, "b": 2, "extra": 9}], ["b", "a"], (("b", "a"), [[2, 1]])),
    ({"instances": [[1, 2]]}, None, (("feature_0", "feature_1"), [[1, 2]])),
    ({"instances": [{"a": 1}]}, None, (("a",), [[1]])),
    ({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, None,
     (("x_0", "x_1"), [[1, 2], [3, 4]])),
    ({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 3]},
                 {"name": "b", "shape": [2, 1], "datatype": "BYTES", "data": [["u"], ["v"]]}]}, None,
     (("a", "b"), [[1, "u"], [3, "v"]])),
    ({"inputs": {"a": [1, 3], "b": [2, 4]}}, None, (("a", "b"), [[1, 2], [3, 4]])),
    ({"dataframe_split": {"columns": ["a"], "data": [[1]]}}, None, (("a",), [[1]])),
    ({"dataframe_records": [{"a": 1}]}, None, (("a",), [[1]])),
    ({"a": 1, "b": "x"}, None, (("a", "b"), [[1, "x"]])),
    # Azure ML's AutoML and designer endpoints, and Studio (classic)
    ({"Inputs": {"data": [{"a": 1, "b": 2}]}, "GlobalParameters": {"method": "predict"}}, None,
     (("a", "b"), [[1, 2]])),
    ({"Inputs": {"WebServiceInput0": [{"a": 1}, {"a": 2}]}, "GlobalParameters": {}}, None, (("a",), [[1], [2]])),
    ({"Inputs": {"input1": {"ColumnNames": ["a", "b"], "Values": [[1, 2]]}}, "GlobalParameters": {}}, ["b"],
     (("b",), [[2]])),
    ({"Data": [[1, 2]]}, None, (("feature_0", "feature_1"), [[1, 2]])),
    ({"inputs": {"a": [1, 2]}}, None, (("a",), [[1], [2]])),  # one column stays a column
    ({"inputs": _nested({"a": [1]}, 20)}, None, (("x",), [[_nested({"a": [1]}, 19)]])),  # no envelopes: a record
]


@pytest.mark.parametrize("payload,declared,expected", SHAPES)
def test_request_shapes(payload, declared, expected):
    assert Schema(inputs=declared).extract_inputs(payload) == expected


@pytest.mark.parametrize("payload,expected", [
    ([0, 1], (("prediction",), [[0], [1]])),
    ({"predictions": [[0.1, 0.9]]}, (("prediction_0", "prediction_1"), [[0.1, 0.9]])),
    ({"result": ["cat"]}, (("prediction",), [["cat"]])),
    ({"outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]}]},
     (("label",), [[1], [0]])),
    ({"predictions": [{"label": "a", "score": 0.5}]}, (("label", "score"), [["a", 0.5]])),
    ({"Results": [0, 1]}, (("prediction",), [[0], [1]])),
    ({"Results": {"WebServiceOutput0": [{"Scored Labels": "a"}]}}, (("Scored Labels",), [["a"]])),
])
def test_response_shapes(payload, expected):
    assert Schema().extract_predictions(payload) == expected


def test_declared_prediction_names_and_field_path():
    schema = Schema(predictions=["p"], prediction_field="body.scores")
    assert schema.extract_predictions({"body": {"scores": [1, 2]}}) == (("p",), [[1], [2]])


def test_media_fields_are_never_extracted():
    schema = Schema(media_fields=["photo"])
    assert schema.extract_inputs([{"age": 3, "photo": "iVBORw0KGgo..."}]) == (("age",), [[3]])


@pytest.mark.parametrize("payload,declared,reason", [
    ({"data": [[1, 2], [3]]}, None, "ragged_rows"),
    ({"data": [[1, 2, 3]]}, ["a", "b"], "width_mismatch"),
    ({"something": 1, "nested": {"x": 1}}, None, "unknown_shape"),
    ([{"x": 1}], ["a", "b"], "no_declared_feature"),
    ({"data": [[1], {"a": 1}]}, None, "mixed_rows"),
    ({"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]}, None, "bad_tensor_shape"),
])
def test_mismatches_have_a_reason(payload, declared, reason):
    with pytest.raises(PayloadMismatch) as info:
        Schema(inputs=declared).extract_inputs(payload)
    assert info.value.reason == reason


def test_schema_rejects_a_string_for_names():
    with pytest.raises(TypeError):
        Schema(inputs="abc")


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_csv_bodies_with_any_line_end(end):
    from mdc_middleware.payloads.captured_request import parse_csv

    body = f'a,b{end}1,"x\ry"{end}3,4{end}'.encode()
    assert parse_csv(body) == [{"a": "1", "b": "x\ry"}, {"a": "3", "b": "4"}]


@pytest.mark.parametrize("header", ["a,b,a", "a,a,a.1", "a.1,a,a", "a,a.1,a", "x,x,x,x", "a,,", ",,",
                                    ",a,Unnamed: 0", "Unnamed: 1,,a"])
def test_csv_column_names_repeated_or_empty_are_named_as_pandas_names_them(header):
    """No cell overwrites another, and the names are those pandas.read_csv gives the same file."""
    import pandas as pd

    from mdc_middleware.payloads.captured_request import parse_csv

    cells = ",".join(str(i) for i in range(header.count(",") + 1))
    records = parse_csv(f"{header}\n{cells}\n".encode())
    expected = pd.read_csv(io.StringIO(f"{header}\n{cells}\n"), dtype=str)
    assert list(records[0]) == list(expected.columns)
    assert list(records[0].values()) == cells.split(",")


def test_a_csv_row_with_more_cells_than_names_refuses_the_body():
    from mdc_middleware.payloads.captured_request import parse_csv

    with pytest.raises(PayloadMismatch) as info:
        parse_csv(b"a,b\n1,2\n3,4,5\n")
    assert info.value.reason == "ragged_rows"


def test_a_short_csv_row_is_padded_with_empty_cells():
    from mdc_middleware.payloads.captured_request import parse_csv

    assert parse_csv(b"a,b,c\n1\n\n4,5,6\n") == [{"a": "1", "b": None, "c": None}, {"a": "4", "b": "5", "c": "6"}]


def test_a_csv_body_the_csv_module_refuses_is_skipped_with_a_reason():
    from mdc_middleware.payloads.captured_request import parse_csv

    with pytest.raises(PayloadMismatch) as info:
        parse_csv(b"a\n" + b"x" * 200_000)  # one field past the csv module's 128 KiB limit
    assert info.value.reason == "invalid_csv"


@pytest.mark.parametrize("literal", [b"18446744073709551616", b"-9223372036854775809", b"99999999999999999999999",
                                     b"123456789012345678901234567890"])
def test_json_integers_past_64_bits_are_read_exactly(literal):
    """orjson reads them as floats, rounded (1e+23 for 99999999999999999999999): a 20-digit id would be
    written wrong."""
    from mdc_middleware.payloads.captured_request import parse_json

    value = parse_json(b'{"data": [[' + literal + b', 0.0012345678901234567, 1]]}')["data"][0]
    assert value == [int(literal), 0.0012345678901234567, 1] and type(value[0]) is int


def test_json_without_long_integers_takes_orjson():
    from mdc_middleware.payloads.captured_request import may_hold_a_long_integer

    assert not may_hold_a_long_integer(b'{"data": [[0.0012345678901234567, 9223372036854775, -1e-05]]}')
    assert may_hold_a_long_integer(b"12345678901234567890")


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"1", b"9", b"0", b".", b"e", b"E", b"-", b" ", b",", b"[", b'"', b"\xff", b"1" * 18,
                                 b"1" * 19, b"7" * 25]), max_size=60).map(b"".join))
def test_the_short_body_test_for_long_integers_answers_as_the_translation_does(body):
    """Short bodies are tested with a pattern, long ones by translating their bytes: the same answer."""
    from mdc_middleware.payloads import captured_request as cr

    shaped = body.translate(cr._INTEGER_SHAPE)
    translated = cr._LONG_INTEGER_AFTER_BLANK in shaped or shaped.startswith(cr._LONG_INTEGER)
    assert cr.may_hold_a_long_integer(body) == translated
    assert cr.may_hold_a_long_integer(body + b" " * cr._PATTERN_UP_TO) == translated  # the translation's way


def test_a_declared_column_misspelt_against_the_records_is_said_once_and_written_empty(caplog):
    """Records lacking a declared column are empty cells (clients leave out empty fields); a record with an
    undeclared key like it means a typo in the Schema, which wrote an empty column and said nothing."""
    schema = Schema(inputs=["sepal_lenght", "petal_width", "region"])
    with caplog.at_level("WARNING", logger="mdc_middleware"):
        for _ in range(3):
            names, rows = schema.extract_inputs({"data": [{"sepal_length": 5.1, "petal_width": 0.2}]})
            assert names == ("sepal_lenght", "petal_width", "region") and rows == [[None, 0.2, None]]
    said = [r.getMessage() for r in caplog.records]
    assert said == ["mdc: the Schema declares column 'sepal_lenght', which the records do not have, and they have "
                    "'sepal_length', which it does not declare: is it misspelt? Its cells are written empty"]
