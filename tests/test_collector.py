import csv
import importlib.util
import io
import json
import sys

import numpy as np
import pandas as pd
import pytest

import mdc_middleware
from mdc_middleware import ConfigError, ModelDataCollector, Settings
from mdc_middleware.analysis import read_collected
from mdc_middleware.records.record import META_COLUMNS

from tests.helpers import ROOT, rows


def test_azure_score_py_runs_unchanged_but_for_the_import(data_dir, monkeypatch):
    monkeypatch.setenv("AML_MODEL_DC_STORAGE_ENABLED", "true")
    monkeypatch.setenv("MDC_LOCAL_DIR", str(data_dir))
    monkeypatch.setenv("MDC_WORKSPACE", "sub-1/rg-1/ws-1")
    monkeypatch.setenv("SERVICE_NAME", "iris-svc")
    spec = importlib.util.spec_from_file_location("score", ROOT / "examples" / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    score.init()
    batch = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    result = score.run(json.dumps({"data": batch}))
    assert isinstance(result, list) and len(result) == 3

    inputs = rows(data_dir, "inputs")
    predictions = rows(data_dir, "predictions")
    assert list(inputs.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width", *META_COLUMNS]
    assert inputs[["sepal_length", "sepal_width", "petal_length", "petal_width"]].values.tolist() == [
        [repr(v) for v in row] for row in batch]
    assert predictions["prediction"].tolist() == [str(v) for v in result]
    assert set(inputs["$aml_workspace"]) == {"sub-1/rg-1/ws-1"}
    assert set(inputs["$aml_service_name"]) == {"iris-svc"}
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.csv"))
    assert all(f.startswith("modeldata/modeldata/sub-1/rg-1/ws-1/iris-svc/iris/default/") for f in files)


def test_collect_accepts_lists_arrays_and_dataframes(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings)
    dc.collect([[1, "x"], [2, "y"]])
    dc.collect(np.array([[3.5, 4.25]]))
    dc.collect(pd.DataFrame({"a": [5], "b": ["z"]}))
    dc.collect([6, 7])  # one instance given flat
    got = rows(data_dir, "inputs")
    assert got[["a", "b"]].values.tolist() == [["1", "x"], ["2", "y"], ["3.5", "4.25"], ["5", "z"], ["6", "7"]]


def test_collect_without_feature_names_infers_them(settings, data_dir):
    ModelDataCollector("m", designation="predictions", settings=settings).collect(np.array([0, 1, 1]))
    ModelDataCollector("m2", designation="inputs", settings=settings).collect(np.array([[1, 2, 3]]))
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["0", "1", "1"]
    assert rows(data_dir, "inputs", model="m2")[["feature_0", "feature_1", "feature_2"]].values.tolist() == [
        ["1", "2", "3"]]


def test_returned_correlations_and_user_correlation_id(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", settings=settings)
    correlations = dc.collect([1.0], user_correlation_id="order-42")
    cid = correlations["$aml_dc_correlation_id"]
    assert cid.startswith("order-42-") and len(cid) == len("order-42-") + 36
    got = rows(data_dir, "inputs")
    assert got["$aml_dc_correlation_id"].tolist() == [cid]
    assert got["$aml_dc_scoring_timestamp"].tolist() == [correlations["$aml_dc_scoring_timestamp"]]
    assert got["$aml_dc_boundary"].tolist() == ["1440"]


def test_add_correlations_joins_later_rows_to_the_first(settings, data_dir):
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
    labels = ModelDataCollector("m", designation="labels", feature_names=["label"], settings=settings)
    correlations = inputs.collect(np.array([[1.0], [2.0]]))
    labels.collect(labels.add_correlations(["a", "b"], correlations))
    got_inputs, got_labels = rows(data_dir, "inputs"), rows(data_dir, "labels")
    assert got_labels["label"].tolist() == ["a", "b"]
    assert got_labels["$aml_dc_correlation_id"].tolist() == got_inputs["$aml_dc_correlation_id"].tolist()


def test_disabled_collection_writes_nothing(data_dir):
    settings = Settings.from_env({}, local_dir=str(data_dir))
    dc = ModelDataCollector("m", designation="inputs", settings=settings)
    assert "$aml_dc_correlation_id" in dc.collect([[1, 2]])
    mdc_middleware.flush(5)
    assert not data_dir.exists()


def test_data_mutated_after_collect_is_not_seen(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings)
    array = np.array([[1.0, 2.0]])
    frame = pd.DataFrame({"a": [1], "b": [2]})
    dc.collect(array)
    dc.collect(frame)
    array[0, 0] = 99.0
    frame.loc[0, "a"] = 99
    assert rows(data_dir, "inputs")["a"].tolist() == ["1.0", "1"]


FRAME_MUTATIONS = {
    "iloc cell": lambda f: f.iloc.__setitem__((0, 0), 99),
    "loc column in place": lambda f: f.loc.__setitem__((slice(None), "a"), 99),
    "update": lambda f: f.update(pd.DataFrame({"a": [99, 99]}, dtype=f.dtypes.iloc[0])),
    "clip in place": lambda f: f.clip(upper=0, inplace=True),
    "column replaced": lambda f: f.__setitem__("a", 99),
    "columns renamed": lambda f: setattr(f, "columns", ["x", "y"]),
}


@pytest.mark.parametrize("declared", [None, ["a", "b"], ["b", "a"]])
@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_a_numeric_frame_changed_after_collect_is_written_as_it_was(settings, data_dir, dtype, declared):
    """Numeric frames are shared, not copied, under pandas' copy-on-write: every kind of in-place change."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=declared, settings=settings)
    for mutate in FRAME_MUTATIONS.values():
        frame = pd.DataFrame({"a": [1, 3], "b": [2, 4]}).astype(dtype)
        dc.collect(frame)
        mutate(frame)
    got = rows(data_dir, "inputs")
    one = ["1.0", "3.0"] if dtype == "float64" else ["1", "3"]
    two = ["2.0", "4.0"] if dtype == "float64" else ["2", "4"]
    assert got["a"].tolist() == one * len(FRAME_MUTATIONS)
    assert got["b"].tolist() == two * len(FRAME_MUTATIONS)
    if declared:
        assert list(got.columns[:2]) == declared


def test_frames_not_shared_whole_are_written_in_column_order(settings, data_dir):
    """Mixed dtypes, and one block whose columns are stored out of order, take the general path."""
    dc = ModelDataCollector("m", designation="inputs", settings=settings)
    dc.collect(pd.DataFrame({"a": [1.5], "b": [2.5], "c": [3.5]})[["c", "a", "b"]])
    mixed = pd.DataFrame({"a": [1.5], "t": ["x"]})
    dc.collect(mixed)
    mixed.loc[0, "a"] = 99.0
    got = rows(data_dir, "inputs")
    assert got[["c", "a", "b"]].values.tolist()[0] == ["3.5", "1.5", "2.5"]
    assert got[["a", "t"]].values.tolist()[1] == ["1.5", "x"]


def test_rows_that_are_not_plain_numbers_are_written_cell_by_cell(settings, data_dir):
    """Plain-number rows are written by orjson in one call; everything else must not slip into that path."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings)
    batches = [[[1, 2.5], [3, 1e16]], [[1, True]], [[1, None]], [[1, float("nan")]], [[1, [2, 3]]], [[1, "2"]],
               [[1, 2 ** 70]], [[1, {"k": 2}]], [[np.float32(1.5), 2]]]
    for batch in batches:
        dc.collect(batch)
    got = rows(data_dir, "inputs")[["a", "b"]].values.tolist()
    assert got[1][1] in ("1e+16", "1e16")  # orjson's spelling (3.13 on), or older orjson's: the same float
    got[1][1] = "1e+16"
    assert got == [["1", "2.5"], ["3", "1e+16"], ["1", "True"], ["1", ""], ["1", ""], ["1", "[2,3]"], ["1", "2"],
                   ["1", str(2 ** 70)], ["1", '{"k":2}'], ["1.5", "2"]]


def test_records_as_dicts_and_a_list_of_labels_are_written_cell_by_cell(settings, data_dir):
    """The plain-rows fast path took a dict for a row of its keys, and a string for a row of its characters:
    [{"a": 1, "b": "x"}] was written as "a:1,b:x", ["setosa", "virginica"] as one row ","."""
    ModelDataCollector("records", designation="inputs", settings=settings).collect(
        [{"a": 1, "b": "x"}, {"a": 2.5, "b": "y"}])
    ModelDataCollector("declared", designation="inputs", feature_names=["b", "a"], settings=settings).collect(
        [{"a": 1, "b": 2}])
    ModelDataCollector("labels", designation="predictions", settings=settings).collect(["setosa", "virginica"])
    assert rows(data_dir, "inputs", model="records")[["a", "b"]].values.tolist() == [["1", "x"], ["2.5", "y"]]
    assert rows(data_dir, "inputs", model="declared")[["b", "a"]].values.tolist() == [["2", "1"]]
    assert rows(data_dir, "predictions", model="labels")["prediction"].tolist() == ["setosa", "virginica"]


def test_collect_reads_dicts_series_and_collections_as_rows_and_leaves_iterators_alone(settings, data_dir):
    """A dict used to be one cell of JSON, a row of a frame (``frame.iloc[0]``) a column named "0", a set or
    a generator its repr; a generator is now skipped and counted, for reading it would use it up."""
    frame = pd.DataFrame({"a": [1.5, 3.5], "b": [2.5, 4.5]})
    inputs = ModelDataCollector("m", designation="inputs", settings=settings)
    inputs.collect({"a": 1, "b": "x"})                        # one record
    inputs.collect({"a": [2, 3], "b": ["y", "z"]})            # columns
    inputs.collect(frame.iloc[0])                             # one row, labelled by its features
    inputs.collect({"a": np.array(4), "b": np.array(["w"])})  # a 0-d array is a value, not a column
    predictions = ModelDataCollector("m", designation="predictions", settings=settings)
    predictions.collect(pd.Series([0, 1]))                    # a column without a name
    predictions.collect(frame["b"].rename("prediction"))      # a named column
    predictions.collect(range(7, 9))                          # a collection: its items are rows
    scores = (score for score in [5, 6])
    predictions.collect(scores)
    assert list(scores) == [5, 6]  # the scoring code still has its generator
    assert rows(data_dir, "inputs")[["a", "b"]].values.tolist() == [
        ["1", "x"], ["2", "y"], ["3", "z"], ["1.5", "2.5"], ["4", '["w"]']]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["0", "1", "2.5", "4.5", "7", "8"]
    assert mdc_middleware.metrics()["skipped"] == {"collect:iterator": 1}


def test_a_row_without_features_is_its_correlation_cells_under_their_header(settings, data_dir):
    ModelDataCollector("m", designation="inputs", settings=settings).collect([[]])
    mdc_middleware.flush(5)
    (path,) = data_dir.rglob("data.csv")
    header, line, end = path.read_text().split("\n")
    assert header == ",".join(META_COLUMNS) and end == ""
    assert len(next(csv.reader([line]))) == len(META_COLUMNS) and not line.startswith(",")


@pytest.mark.parametrize("user_id", ['has,comma', 'has"quote', "has\nnewline", "=formula", "plain"])
def test_correlation_ids_needing_quotes_round_trip_on_the_fast_path(settings, data_dir, user_id):
    dc = ModelDataCollector("m", designation="inputs", settings=settings)
    correlations = dc.collect(np.array([[1.0, 2.0]]), user_correlation_id=user_id)
    dc.collect([[3.0, 4.0]], user_correlation_id=user_id)
    expected = correlations["$aml_dc_correlation_id"]
    if user_id.startswith("="):
        expected = "'" + expected
    got = rows(data_dir, "inputs")
    assert got["$aml_dc_correlation_id"].tolist()[0] == expected
    assert got["feature_0"].tolist() == ["1.0", "3.0"] and len(got) == 2
    buffer = io.StringIO()  # and in the file exactly as the csv module quotes it
    csv.writer(buffer, lineterminator="\n").writerow([1.0, 2.0, expected])
    (path,) = data_dir.rglob("data.csv")
    assert buffer.getvalue()[:-1] in path.read_text()


def test_signals_use_collection_name_as_file_name(settings, data_dir):
    ModelDataCollector("m", designation="signals", collection_name="latency", settings=settings).collect([3])
    mdc_middleware.flush(5)
    assert [p.name for p in data_dir.rglob("*.csv")] == ["latency.csv"]


def test_uncollectable_value_never_raises_and_is_counted(settings):
    dc = ModelDataCollector("m", designation="inputs", settings=settings)

    class Weird:
        def __str__(self):
            raise RuntimeError("boom")

    dc.collect([[Weird()]])
    mdc_middleware.flush(5)
    snap = mdc_middleware.metrics()
    assert snap["internal_errors"] == 1 and snap["dropped_reasons"] == {"encode_error": 1}


def test_header_written_once_and_formula_injection_neutralised(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["text"], settings=settings)
    for value in ["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", 'he said "hi", then\nleft']:
        dc.collect([value])
    mdc_middleware.flush(5)
    (path,) = data_dir.rglob("data.csv")
    assert path.read_text().count("$aml_dc_correlation_id") == 1
    assert rows(data_dir, "inputs")["text"].tolist() == [
        "'=cmd|' /C calc'!A0", "'+1+1", "-2", "'@SUM(A1)", 'he said "hi", then\nleft']


def test_a_model_version_given_as_a_number_is_its_text_as_with_azure(settings, data_dir):
    """Azure ML numbers model versions (Model.version is an int) and its collector took one; ours refused it."""
    ModelDataCollector("m", designation="inputs", model_version=2, settings=settings).collect([[1]])
    ModelDataCollector("m", designation="inputs", settings=settings.replace(model_version=np.int64(3))).collect([[2]])
    got = rows(data_dir, "inputs")
    assert sorted(zip(got["$aml_model_version"], got["feature"])) == [("2", "1"), ("3", "2")]
    assert sorted(p.parents[4].name for p in data_dir.rglob("*.csv")) == ["2", "3"]  # .../<version>/inputs/y/m/d
    with pytest.raises(ConfigError, match="model_version"):
        ModelDataCollector("m", designation="inputs", model_version=1.5, settings=settings)


def test_array_likes_are_collected_as_their_numbers(settings, data_dir):
    """A tensor (anything numpy can read through __array__) or a pyarrow array was written as its text in one
    cell: "tensor([[1.5, 2.0], [3.0, 4.0]])"."""
    import pyarrow

    class Tensor:  # what torch.Tensor and friends offer numpy
        def __init__(self, values):
            self.values = np.asarray(values)

        def __array__(self, dtype=None, copy=None):
            return self.values

        def __iter__(self):  # as a tensor iterates: its rows are tensors too
            return iter([Tensor(row) for row in self.values])

        def __repr__(self):
            return f"tensor({self.values.tolist()})"

    batch = Tensor([[1.5, 2.0], [3.0, 4.0]])
    ModelDataCollector("m", designation="inputs", settings=settings).collect(batch)
    batch.values[0, 0] = 99.0  # changed after collect(): not seen
    ModelDataCollector("m", designation="predictions", settings=settings).collect(pyarrow.array([0, 1]))
    assert rows(data_dir, "inputs")[["feature_0", "feature_1"]].values.tolist() == [["1.5", "2.0"], ["3.0", "4.0"]]
    assert rows(data_dir, "predictions")["prediction"].tolist() == ["0", "1"]


def test_an_array_in_a_cell_is_written_whole_as_json(settings, data_dir):
    """numpy's own text of an array cuts it short ("[   0    1 ... 1999]"): an embedding kept in a frame's cell
    lost all but six of its numbers."""
    embedding = np.arange(2000) / 7
    frame = pd.DataFrame({"id": ["a"], "embedding": [embedding],
                          "nested": [{"ids": np.arange(3), "top": [np.int64(7), np.float32(0.5)]}]})
    ModelDataCollector("m", designation="inputs", settings=settings).collect(frame)
    written = rows(data_dir, "inputs")
    assert json.loads(written["embedding"][0]) == embedding.tolist()
    assert json.loads(written["nested"][0]) == {"ids": [0, 1, 2], "top": [7, 0.5]}  # numbers, not "7"


def test_pandas_missing_values_in_list_rows_are_empty_cells_as_in_a_frame(settings, data_dir):
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b", "c"], settings=settings)
    dc.collect([[1, pd.NA, pd.NaT]])
    dc.collect(pd.DataFrame({"a": [1], "b": pd.array([None], dtype="Int64"), "c": [pd.NaT]}))
    assert rows(data_dir, "inputs")[["a", "b", "c"]].values.tolist() == [["1", "", ""], ["1", "", ""]]


def test_numpy_floats_in_list_rows_and_object_columns_are_numbers(settings, data_dir):
    """numpy 2 writes np.float64(0.1) as "np.float64(0.1)", and that was the cell: a row built from an array's
    items (list(row), predict_proba(x)[0][1]) or an object column. A float32 was its float64's 17 digits."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings)
    array = np.array([[0.1, 2.0]])
    dc.collect([list(array[0])])                                                  # np.float64 items
    dc.collect([[np.float64(3.5), "label"]])                                      # beside text
    dc.collect(pd.DataFrame({"a": [np.float64(0.25)], "b": ["x"]}, dtype=object))  # an object column
    dc.collect([list(np.array([0.1, 1e-7], dtype=np.float32))])                   # float32 items
    dc.collect([[[np.float32(0.2)], {"k": np.float32(2.2)}]])                     # inside list and dict cells
    assert rows(data_dir, "inputs")[["a", "b"]].values.tolist() == [
        ["0.1", "2.0"], ["3.5", "label"], ["0.25", "x"], ["0.1", "1e-07"], ["[0.2]", '{"k":2.2}']]
    read = read_collected(data_dir, "inputs")
    assert read["a"].iloc[:4].astype(float).tolist() == [0.1, 3.5, 0.25, 0.1]


def test_a_nul_character_is_written_as_the_replacement_character_and_counted(settings, data_dir):
    """pandas before 3.0 (and other CSV readers in C) end a cell at a NUL without a word: "a\\0b" read as "a"."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=["na\x00me", "b"], settings=settings)
    dc.collect([["a\x00b", 1]], user_correlation_id="id\x00")
    frame = rows(data_dir, "inputs")
    assert frame[["na\ufffdme", "b"]].values.tolist() == [["a\ufffdb", "1"]]
    assert frame["$aml_dc_correlation_id"].str.startswith("id\ufffd-").tolist() == [True]
    # Each NUL of the cells (the header's is not counted); on Python 3.10, once for the record (see encode)
    assert mdc_middleware.metrics()["skipped"]["nul_replaced"] == (1 if sys.version_info[:2] == (3, 10) else 2)
    raw = b"".join(path.read_bytes() for path in data_dir.rglob("*.csv"))
    assert b"\x00" not in raw


def test_a_payload_parsed_as_score_py_parses_it_is_its_rows(settings, data_dir):
    """inputs_dc.collect(json.loads(raw_data)) wrote one column named "data" holding each row's JSON."""
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["a", "b"], settings=settings)
    inputs.collect(json.loads('{"data": [[1, 2], [3, 4]]}'))
    inputs.collect(json.loads('{"Inputs": {"data": [{"a": 5, "b": 6}]}, "GlobalParameters": {"method": "predict"}}'))
    inputs.collect({"input_data": {"columns": ["b", "a"], "index": [0], "data": [[8, 7]]}})
    inputs.collect({"data": [9, 10], "a": [11, 12]})  # other values that are lists: columns, as before
    assert rows(data_dir, "inputs")[["a", "b"]].fillna("").values.tolist() == [
        ["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"], ["11", ""], ["12", ""]]


def test_a_designation_that_looks_like_a_slip_of_azures_is_warned_of_once_and_still_collected(settings, data_dir,
                                                                                               caplog):
    """``designation="input"`` filed rows where no reader looks for inputs, and said nothing."""
    for _ in range(3):  # a collector made in every request: one warning
        ModelDataCollector("m", designation="input", feature_names=["a"], settings=settings).collect([[1]])
    ModelDataCollector("m", designation="Predictions", settings=settings)
    ModelDataCollector("m", designation="feedback", settings=settings)  # a name of one's own, as Azure took
    ModelDataCollector("m", designation="labels", settings=settings)
    said = [r.getMessage() for r in caplog.records if "designation=" in r.getMessage()]
    assert said == [
        "mdc: ModelDataCollector('m', designation='input'): rows are filed under designation 'input' (a folder of "
        "that name), not 'inputs', where the readers look for inputs; did you mean 'inputs'?",
        "mdc: ModelDataCollector('m', designation='Predictions'): rows are filed under designation 'Predictions' (a "
        "folder of that name), not 'predictions', where the readers look for predictions; did you mean "
        "'predictions'?"]
    mdc_middleware.flush(10)
    assert read_collected(data_dir, "input", as_text=True)["a"].tolist() == ["1"] * 3


def test_a_frame_without_the_feature_names_is_written_by_position_as_azures_was(settings, data_dir, caplog):
    """``pd.DataFrame(array)`` (columns 0, 1) collected with feature_names had every cell written empty; Azure's
    collector wrote the frame's values. Numeric frames and mixed ones, said once."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=["f1", "f2"], settings=settings)
    dc.collect(pd.DataFrame(np.array([[1.5, 2.0], [3.0, 4.0]])))
    dc.collect(pd.DataFrame({"a": ["x"], "b": [5]}))
    mdc_middleware.flush(10)
    assert read_collected(data_dir, "inputs", as_text=True)[["f1", "f2"]].values.tolist() == [
        ["1.5", "2.0"], ["3.0", "4.0"], ["x", "5"]]
    said = [r.getMessage() for r in caplog.records if "by position" in r.getMessage()]
    assert said == ["mdc: collect() for model 'm' (inputs) was given a DataFrame whose columns (0, 1) are none of "
                    "its feature_names (f1, f2): its values are written by position under feature_names, as Azure's "
                    "collector wrote them"]


def test_feature_names_misspelt_against_the_data_are_said_and_sparse_records_are_not(settings, data_dir, caplog):
    typo = ModelDataCollector("typo", designation="inputs", feature_names=["sepal_lenght", "b"], settings=settings)
    typo.collect(pd.DataFrame({"sepal_length": [1.0], "b": [2.0]}))
    typo.collect([{"sepal_length": 1.0, "b": 3.0}])
    sparse = ModelDataCollector("sparse", designation="inputs", feature_names=["a", "b", "c"], settings=settings)
    sparse.collect([{"a": 1, "b": 2}, {"a": 3, "c": 4}])  # clients leave out empty fields
    mdc_middleware.flush(10)
    assert read_collected(data_dir, "inputs", model="typo", as_text=True)[["sepal_lenght", "b"]].values.tolist() == [
        ["", "2.0"], ["", "3.0"]]
    assert read_collected(data_dir, "inputs", model="sparse", as_text=True)[["a", "b", "c"]].values.tolist() == [
        ["1", "2", ""], ["3", "", "4"]]
    said = [r.getMessage() for r in caplog.records if "feature_names" in r.getMessage()]
    assert said == ["mdc: collect() for model 'typo' (inputs) was given data without its feature_names sepal_lenght: "
                    "their cells are written empty; the data has 'sepal_length' (for 'sepal_lenght'?), which "
                    "feature_names does not name: a typo?"]


def test_rows_wider_or_narrower_than_the_feature_names_are_counted_and_said(settings, data_dir, caplog):
    """A fourth value under three names was cut without a count or a word."""
    dc = ModelDataCollector("wide", designation="inputs", feature_names=["f1", "f2", "f3"], settings=settings)
    dc.collect(np.array([[1.0, 2.0, 3.0, 4.0]]))
    dc.collect([[1, 2]])
    dc.collect(pd.DataFrame(np.array([[5.0, 6.0, 7.0, 8.0]])))  # none of the names: by position, then cut
    dc.collect([[1, 2, 3]])
    mdc_middleware.flush(10)
    assert read_collected(data_dir, "inputs", model="wide", as_text=True)[["f1", "f2", "f3"]].values.tolist() == [
        ["1.0", "2.0", "3.0"], ["1", "2", ""], ["5.0", "6.0", "7.0"], ["1", "2", "3"]]
    assert mdc_middleware.metrics()["skipped"]["collect:width_mismatch"] == 3
    said = [r.getMessage() for r in caplog.records if "values for" in r.getMessage()]
    assert said == ["mdc: collect() for model 'wide' (inputs) was given rows of 4 values for 3 feature_names (f1, f2, "
                    "f3): values past the names are not written and missing ones are empty cells (counted as "
                    "collect:width_mismatch)"]
