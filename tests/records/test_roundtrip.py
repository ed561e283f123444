"""Generated data in, files read back (property-based): every cell comes back as it was given, whatever text,
numbers or column names a model's data holds, through collect() and both middlewares; blocks are cut between
rows; field rules hold; redeliveries are taken back out. (Hand-written cases: test_hostile, test_readback.)"""
from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

import mdc_middleware
from mdc_middleware import ModelDataCollector
from mdc_middleware.analysis import read_collected
from mdc_middleware.payloads.media import is_media_text

# The rule as the README states it, written here again on purpose: the test is the second opinion.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
HOSTILE = st.sampled_from(["\r", "\n", '"', ",", "=", "+", "-", "@", "\t", "\x00", " ", "'", "\u2028"])
plain = st.text(st.characters(codec="utf-8"), max_size=6)
text = (plain | st.builds(lambda before, hostile, after: before + hostile + after, plain, HOSTILE, plain)
        | st.text(st.characters(codec="utf-8") | HOSTILE, max_size=12))  # one hostile character alone, or many
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
# Text that carries media ("data:video/…") is blanked by design (media is never collected): not a cell here.
cells = st.none() | st.booleans() | numbers | text.filter(lambda t: not is_media_text(t))
# What scoring code hands collect() besides: numpy's scalars (a row built from an array's items).
numpy_cells = (st.floats(allow_nan=True, allow_infinity=True).map(np.float64) | st.integers(-(2**63), 2**63 - 1).map(
    np.int64) | st.booleans().map(np.bool_) | st.floats(allow_nan=True, allow_infinity=True, width=32).map(np.float32))
names = st.lists(text.map(lambda n: n.replace("\x00", "")).filter(
    lambda n: n.strip() and not n.startswith(("$", "Unnamed"))), min_size=1, max_size=4, unique_by=lambda n: n.strip())


def expected_text(value) -> str:
    """How a cell is written (README, What is written): the csv module's text, formulas neutralised."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")  # NUL is written as the replacement character (README)
        neutralised = value.startswith(FORMULA_START) and not NUMBER.match(value)
        quoted = value.startswith(tuple("'" + c for c in (*FORMULA_START, "'")))  # would read as neutralised
        return "'" + value if neutralised or quoted else value
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def same_cell(written: str, value) -> bool:
    if isinstance(value, np.generic):  # a float32 in the shortest text of its own precision, as in arrays
        value = float(str(value)) if isinstance(value, np.floating) else value.item()
    if isinstance(value, float) and not math.isnan(value):  # the shortest round-trip text, either spelling
        return float(written) == value
    return written == expected_text(value)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(columns=names, data=st.data())
def test_any_cells_and_names_read_back_as_given(tmp_path_factory, columns, data):
    directory = tmp_path_factory.mktemp("roundtrip")
    rows = data.draw(st.lists(st.lists(cells | numpy_cells, min_size=len(columns), max_size=len(columns)),
                              min_size=1, max_size=5))
    settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(directory), flush_interval=60.0)
    collector = ModelDataCollector("m", designation="inputs", feature_names=columns, settings=settings)
    collector.collect(rows)
    assert mdc_middleware.flush(10)
    assert mdc_middleware.metrics()["internal_errors"] == 0
    frame = read_collected(directory, "inputs", as_text=True)
    assert list(frame.columns[:len(columns)]) == columns
    assert len(frame) == len(rows)
    for row, written in zip(rows, frame[columns].values.tolist()):
        assert all(same_cell(cell, value) for cell, value in zip(written, row)), (written, row)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=3, max_size=3),
                       min_size=1, max_size=20))
def test_numeric_frames_read_back_as_given(tmp_path_factory, values):
    directory = tmp_path_factory.mktemp("roundtrip")
    settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(directory), flush_interval=60.0)
    collector = ModelDataCollector("m", designation="inputs", settings=settings)
    collector.collect(pd.DataFrame(values, columns=["a", "b", "c"]))  # the numeric-block path
    assert mdc_middleware.flush(10)
    frame = read_collected(directory, "inputs", as_text=True)
    assert list(frame.columns[:3]) == ["a", "b", "c"] and len(frame) == len(values)
    for row, written in zip(values, frame[["a", "b", "c"]].values.tolist()):
        assert all(same_cell(cell, value) for cell, value in zip(written, row)), (written, row)


def serve_once(kind: str, routes: dict, directory, body: str, answer: str) -> None:
    """One POST /score through the real middleware around a real app (FastAPI's Starlette, or Flask) that
    reads the body and answers ``answer``; every row is flushed to ``directory`` before this returns."""
    settings = dict(enabled=True, local_dir=str(directory), flush_interval=60.0)
    if kind == "asgi":
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
        from starlette.testclient import TestClient

        async def score(request):
            await request.body()  # (a body the app never read is not collected)
            return Response(answer, media_type="application/json")

        app = Starlette(routes=[Route("/score", score, methods=["POST"])])
        app.add_middleware(mdc_middleware.DataCollectionMiddleware, routes=routes, **settings)
        with TestClient(app) as client:  # its shutdown flushes
            status = client.post("/score", content=body, headers={"content-type": "application/json"}).status_code
    else:
        from flask import Flask, request

        flask_app = Flask(__name__)

        @flask_app.post("/score")
        def score_wsgi():
            request.get_data()
            return flask_app.response_class(answer, mimetype="application/json")

        flask_app.wsgi_app = mdc_middleware.WSGIDataCollectionMiddleware(flask_app.wsgi_app, routes=routes, **settings)
        status = flask_app.test_client().post("/score", data=body, content_type="application/json",
                                              buffered=True).status_code  # (buffered: the app's iterable is closed)
        assert mdc_middleware.flush(10)
    assert status == 200


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(columns=names, data=st.data())
def test_any_json_rows_a_service_receives_read_back_as_sent(tmp_path_factory, columns, data):
    """The middlewares' path: a JSON body parsed on the writer thread, its rows written under their names
    (declared, or the records' keys), in the payload shapes scoring clients send; and the predictions."""
    from mdc_middleware import Schema

    rows = data.draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), min_size=1,
                              max_size=5))
    predictions = data.draw(st.lists(cells, min_size=len(rows), max_size=len(rows)))
    shape = data.draw(st.sampled_from(["data", "split", "records", "records, undeclared"]))
    payload = {"data": {"data": rows},                       # Azure ML score.py
               "split": {"input_data": {"columns": columns, "index": list(range(len(rows))), "data": rows}},
               }.get(shape, [dict(zip(columns, row)) for row in rows])  # records: names from the keys
    declared = None if shape == "records, undeclared" else columns
    directory = tmp_path_factory.mktemp("roundtrip")
    serve_once(data.draw(st.sampled_from(["asgi", "wsgi"])), {"/score": Schema(inputs=declared, model_name="m")},
               directory, json.dumps(payload), json.dumps({"predictions": predictions}))  # NaN, Infinity as sent
    frame = read_collected(directory, "inputs", as_text=True)
    assert list(frame.columns[:len(columns)]) == columns
    assert len(frame) == len(rows)
    for row, written in zip(rows, frame[columns].values.tolist()):
        assert all(same_cell(cell, value) for cell, value in zip(written, row)), (written, row)
    written = read_collected(directory, "predictions", as_text=True)["prediction"].tolist()
    assert all(same_cell(cell, value) for cell, value in zip(written, predictions)) and len(written) == len(rows)


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.lists(text, min_size=1, max_size=3), min_size=2, max_size=12), data=st.data())
def test_blocks_are_cut_at_row_ends_whatever_the_cells_hold(rows, data):
    """Append blocks (4 MiB) are cut only between rows: a quoted cell's line breaks and quotes never look
    like a row end. Each block parses alone into whole rows, and all of them give the rows."""
    import csv
    import io

    from mdc_middleware.records.csv_encoding import CsvLines
    from mdc_middleware.records.csv_scanning import csv_row_count
    from mdc_middleware.storage.blob import split_blocks

    if sys.version_info < (3, 11):  # the csv module there refuses a NUL (the encoder replaces it before)
        rows = [[cell.replace("\x00", "") for cell in row] for row in rows]

    lines = CsvLines()
    writer = lines.writer()
    for row in rows:
        writer.writerow(row)
    payload = lines.text().encode("utf-8")
    assert csv_row_count(payload) == len(rows)
    longest = max(len(line.encode("utf-8")) for line in lines) - 1  # its "\r\n" became "\n"
    limit = data.draw(st.integers(longest, max(longest, len(payload) - 1)))  # at least one cut, where it can
    blocks = list(split_blocks(payload, limit))
    assert b"".join(blocks) == payload and all(len(block) <= limit for block in blocks)
    parsed = []
    for block in blocks:
        assert block.endswith(b"\n")
        parsed += list(csv.reader(io.StringIO(block.decode("utf-8"), newline="")))
    assert parsed == rows


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True), data=st.data())
def test_an_excluded_field_never_reaches_a_file(tmp_path_factory, name, data):
    """Whatever case the payload spells it in, at the top or nested in a JSON-valued cell, by name or by
    glob, through the middleware or collect(): the excluded field's value is in no file."""
    from mdc_middleware import Schema

    marker = "SECRET-" + data.draw(st.from_regex(r"[0-9a-f]{12}", fullmatch=True))
    key = data.draw(st.sampled_from([name, name.upper(), name.title()]))
    pattern = data.draw(st.sampled_from([name, name[:1] + "*", name.upper()]))
    records = data.draw(st.sampled_from([
        [{"a": 1, key: marker}],
        [{"a": {"inner": {key: marker}}}],
        [{"a": [1, {key: marker}]}, {"a": 2, key: marker}],
    ]))
    directory = tmp_path_factory.mktemp("privacy")
    if data.draw(st.booleans()):
        serve_once(data.draw(st.sampled_from(["asgi", "wsgi"])), {"/score": Schema(exclude=[pattern])}, directory,
                   json.dumps(records), json.dumps({"predictions": [0] * len(records)}))
    else:
        settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(directory))
        ModelDataCollector("m", designation="inputs", exclude_features=[pattern], settings=settings).collect(records)
        assert mdc_middleware.flush(10)
    written = b"".join(path.read_bytes() for path in directory.rglob("*.csv"))
    assert b"SECRET-" not in written
    assert len(read_collected(directory, "inputs", as_text=True)) == len(records)  # the rest was collected


@hypothesis_settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(st.integers(0, 3), st.lists(st.lists(st.integers(0, 2), min_size=2, max_size=2),
                                                              min_size=1, max_size=3)), min_size=1, max_size=8),
       again=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 20)), max_size=5))
def test_redeliveries_and_only_they_are_taken_back_out(records, again):
    """At-least-once delivery repeats whole records later in a file; the readers drop those repeats, and
    keep equal rows within one record (data), and a later record of the same id with other rows (two
    collect() calls in one request)."""
    from itertools import groupby

    from mdc_middleware.analysis.join import drop_redelivered
    from mdc_middleware.records.record import CORRELATION_ID

    order = list(range(len(records)))
    for which, where in again:  # a redelivery: later than its original, never beside a record of its id
        which %= len(records)
        where = order.index(which) + 2 + where % (len(order) - order.index(which))
        neighbours = order[where - 1:where + 1]
        if where <= len(order) and all(records[n][0] != records[which][0] for n in neighbours):
            order.insert(where, which)
    rows = [[f"c{records[i][0]}", *row] for i in order for row in records[i][1]]
    kept, removed = drop_redelivered(pd.DataFrame(rows, columns=[CORRELATION_ID, "a", "b"]))
    expected, seen = [], set()  # the rule, written plainly: a run of one id seen before with the same rows goes
    for _, run in groupby(rows, key=lambda row: row[0]):
        run = list(run)
        key = repr(run)
        if key not in seen:
            seen.add(key)
            expected += run
    assert kept.values.tolist() == expected
    assert removed == len(rows) - len(expected)


def _hashed(value) -> str:
    return f"R{len(repr(value))}"


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(columns=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), min_size=2, max_size=5,
                        unique=True), data=st.data())
def test_only_included_columns_are_written_and_redacted_ones_as_their_function_says(tmp_path_factory, columns,
                                                                                     data):
    from mdc_middleware import Schema

    include = data.draw(st.lists(st.sampled_from(columns), min_size=1, unique=True))
    redacted = data.draw(st.sampled_from(include))
    rows = data.draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), min_size=1,
                              max_size=4))
    spelled = data.draw(st.sampled_from([str.lower, str.upper]))  # rules match names in any case
    rules = dict(include=[spelled(name) for name in include], redact={spelled(redacted): _hashed})
    directory = tmp_path_factory.mktemp("rules")
    if data.draw(st.booleans()):
        serve_once(data.draw(st.sampled_from(["asgi", "wsgi"])), {"/score": Schema(inputs=columns, **rules)},
                   directory, json.dumps({"data": rows}), json.dumps({"predictions": [0] * len(rows)}))
    else:
        settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(directory))
        ModelDataCollector("m", designation="inputs", feature_names=columns, settings=settings,
                           include_features=rules["include"], redact=rules["redact"]).collect(rows)
        assert mdc_middleware.flush(10)
    frame = read_collected(directory, "inputs", as_text=True)
    kept = [name for name in columns if name in include]
    assert [c for c in frame.columns if not c.startswith("$")] == kept
    assert len(frame) == len(rows)
    for row, written in zip(rows, frame[kept].values.tolist()):
        for name, cell in zip(kept, written):
            value = row[columns.index(name)]
            if name == redacted and value is not None:
                assert cell == _hashed(value)
            else:
                assert same_cell(cell, value), (name, cell, value)


def _by_file(encoded) -> dict:
    """Encoded pieces → {(target, folder, header): (bytes, rows)}: what each file would get, in order."""
    files: dict = {}
    for piece in filter(None, encoded):
        key = (piece.target, piece.folder, piece.header)
        payload, rows = files.get(key, (b"", 0))
        files[key] = (payload + piece.payload, rows + piece.rows)
    return files


def _captured(plan_id: int, body: bytes, answer: bytes, timestamp: float, number: int) -> tuple:
    """A RawCapture as the middleware queues it (capture.RawCapture)."""
    return (plan_id, body, ((b"content-type", b"application/json"),), answer, "application/json", "",
            f"id-{number}", f"request-{number}", timestamp)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_run_of_captured_requests_is_written_as_each_alone_would_be(tmp_path, data):
    """The writer encodes captured requests a run at a time, rows of plain numbers for many requests in one
    call: each file must get the same bytes, and the counters the same counts, as the general path gives
    record by record. Runs mix requests of plain numbers (a few rows, or more) with text cells, other columns
    (records with other keys), bodies that are not JSON, empty rows, two routes and two days."""
    from mdc_middleware import Schema
    from mdc_middleware.payloads.captured_request import Capture, plan_by_id
    from mdc_middleware.pipeline.encoder import encode_captures, encode_record
    from mdc_middleware.metrics import Metrics
    from mdc_middleware.capture.policy import CapturePolicy

    settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(tmp_path), record_unparsed=True)
    policy = CapturePolicy({"/declared": Schema(inputs=["a", "b"], model_name="m"),
                            "/undeclared": Schema(model_name="u")}, settings, writer=None)
    plans = [policy.select("POST", "/declared").id, policy.select("POST", "/undeclared").id]
    row_numbers = st.lists(st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False),
                           min_size=2, max_size=2)
    body = st.one_of(
        st.lists(row_numbers, max_size=3).map(lambda rows: {"data": rows}),       # plain numbers (or no rows)
        st.lists(row_numbers, min_size=17, max_size=18).map(lambda rows: {"data": rows}),  # more than a few
        st.lists(st.lists(cells, min_size=2, max_size=2), min_size=1, max_size=2).map(lambda rows: {"data": rows}),
        st.sampled_from([[{"a": 1}], [{"b": 2}], [{"a": 3, "b": 4}]]),  # other columns, as often as not the same
        st.dictionaries(st.sampled_from(["a", "b", "c"]), text, min_size=1).map(lambda r: [r]),
        st.just(b"not json"),
    )
    day = 86_400 * 20_000
    run = data.draw(st.lists(st.tuples(st.sampled_from(plans), body, st.lists(st.integers(0, 2), max_size=3),
                                       st.sampled_from([day + 5.5, day + 86_399.25, day + 86_400.0])),
                             min_size=1, max_size=12))
    raws = [_captured(plan, payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
                      json.dumps({"predictions": answer}).encode(), when, number)
            for number, (plan, payload, answer, when) in enumerate(run)]

    together, alone = Metrics(), Metrics()
    in_one_run = _by_file(encode_captures([Capture.from_raw(raw, plan_by_id(raw[0])) for raw in raws], together,
                                         True))
    one_by_one = _by_file([encode_record(record, alone, True, counted=False)  # the general path, record by record
                          for raw in raws for record in Capture.from_raw(raw, plan_by_id(raw[0])).to_records(alone)])
    assert in_one_run == one_by_one
    assert together.totals() == alone.totals()
    assert together.totals()[0].get("internal_errors", 0) == 0


_FLOAT_CELL = re.compile(r"(?<![^,\n])-?[0-9.]+[eE.][-+0-9e]*(?![^,\n])")


def same_floats(text: str) -> str:
    """CSV text with every float cell spelled as repr() spells it: orjson writes 5e-05 as 0.00005, and
    1e-07 as 1e-7 (the same shortest round-trip digits). Whole numbers are left as they are."""
    def respell(match: re.Match) -> str:
        try:
            return repr(float(match[0]))
        except ValueError:  # text that only looks like a number ("1..2")
            return match[0]

    return _FLOAT_CELL.sub(respell, text)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), neutralize=st.booleans(), records=st.integers(1, 4))
def test_rows_written_by_orjson_are_the_bytes_the_csv_module_writes(data, neutralize, records):
    """Rows of plain numbers and of text that needs no quoting (class labels) are written by orjson, for one
    record or many: the same text as the csv path gives each record, or the csv path itself."""
    from mdc_middleware.records import csv_encoding as records_module
    from mdc_middleware.storage.paths import Target
    from mdc_middleware.records.csv_encoding import encode, plain_lines
    from mdc_middleware.records.record import Record

    width = data.draw(st.integers(1, 3))
    label = st.sampled_from(["setosa", "Iris virginica", "", " padded ", "é", "1.5", "-1", "=1+2", "+x", "@x",
                             "a,b", 'say "hi"', "a]b", "[a", "a],[b", "null", "x\\y", "\u2028", "\x7f",
                             float("nan"), float("inf")])
    numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    if sys.version_info < (3, 11):  # the csv module there refuses a NUL (see records.encode)
        text_cells = text.map(lambda value: value.replace("\x00", ""))
    else:
        text_cells = text
    cell = data.draw(st.sampled_from([numbers | label,  # one hard label among plain cells: it alone decides
                                      numbers | label | st.floats() | text_cells | st.none() | st.booleans()]))
    target = Target("s", "r", "w", "svc", "m", "1", "predictions")
    names = tuple(f"c{i}" for i in range(width))
    # What collect() may hand over as well: records as dicts, and bare values (a 1-D list, one value a row).
    row = data.draw(st.sampled_from([st.lists(cell, min_size=width, max_size=width),
                                     st.fixed_dictionaries({name: cell for name in names}),
                                     st.lists(cell, min_size=width, max_size=width) | label]))
    batch = [Record(target=target, data=data.draw(st.lists(row, min_size=1, max_size=3)), columns=names,
                    correlation_id=f"id-{n}", timestamp=1e9 + n, request_id=f"request-{n}") for n in range(records)]
    columns = batch[0].columns
    fast = plain_lines(batch, width, neutralize)
    original = records_module.plain_lines
    records_module.plain_lines = lambda *args: None  # encode() then takes the csv module's path
    try:
        by_csv = [encode(record, columns, neutralize) for record in batch]
    finally:
        records_module.plain_lines = original
    if fast is not None:
        assert (fast[0], same_floats(fast[1])) == (sum(rows for rows, _ in by_csv),
                                                   same_floats("".join(text for _, text in by_csv)))
    plain = numbers | st.sampled_from(["setosa", "Iris virginica", "", "é", " padded "])
    easy = [Record(target=target, data=data.draw(st.lists(st.lists(plain, min_size=width, max_size=width),
                                                           min_size=1, max_size=3)),
                   columns=columns, correlation_id="id", timestamp=1e9, request_id="r")]
    assert plain_lines(easy, width, neutralize) is not None  # labels like these do take the fast path


def test_rows_of_other_columns_in_one_run_keep_their_own_header(tmp_path):
    """Plain numbers in both, same width, other names: never written together under the first one's header."""
    from mdc_middleware import Schema
    from mdc_middleware.payloads.captured_request import Capture, plan_by_id
    from mdc_middleware.pipeline.encoder import encode_captures
    from mdc_middleware.metrics import Metrics
    from mdc_middleware.capture.policy import CapturePolicy

    settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(tmp_path))
    plan = CapturePolicy({"/undeclared": Schema(model_name="u")}, settings, writer=None).select("POST", "/undeclared")
    raws = [_captured(plan.id, json.dumps([{name: 1}]).encode(), b'{"predictions": [0]}', 1e9, n)
            for n, name in enumerate(["a", "b", "a"])]
    files = _by_file(encode_captures([Capture.from_raw(raw, plan_by_id(raw[0])) for raw in raws], Metrics(), True))
    inputs = {key[2].split(",")[0]: value for key, value in files.items() if key[0] is plan.inputs_target}
    assert {name: rows for name, (_, rows) in inputs.items()} == {"a": 2, "b": 1}
    assert [line.split(b",")[1] for line in inputs["a"][0].splitlines()] == [b"id-0", b"id-2"]


def test_a_bug_in_writing_records_together_costs_no_row(tmp_path, monkeypatch):
    """If writing small records together fails, each is written on its own: same bytes, one internal error."""
    from mdc_middleware import Schema
    from mdc_middleware.pipeline import encoder
    from mdc_middleware.payloads.captured_request import Capture, plan_by_id
    from mdc_middleware.metrics import Metrics
    from mdc_middleware.capture.policy import CapturePolicy

    settings = mdc_middleware.Settings.from_env({}, enabled=True, local_dir=str(tmp_path))
    plan = CapturePolicy({"/score": Schema(inputs=["a", "b"], model_name="m")}, settings, writer=None).select(
        "POST", "/score")
    raws = [_captured(plan.id, json.dumps({"data": [[n, n + 0.5]]}).encode(), b'{"predictions": [1]}', 1e9, n)
            for n in range(5)]
    expected = _by_file(encoder.encode_captures([Capture.from_raw(raw, plan_by_id(raw[0])) for raw in raws],
                                                Metrics(), True))

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(encoder, "plain_lines", broken)
    metrics = Metrics()
    assert _by_file(encoder.encode_captures([Capture.from_raw(raw, plan_by_id(raw[0])) for raw in raws], metrics,
                                            True)) == expected
    counts = metrics.totals()[0]
    assert counts["internal_errors"] == 2 and counts["rows_captured"] == 10  # inputs and predictions: 5 rows each
