"""Runs of alike captured requests are encoded together (plain_runs) and must come out exactly as the general
way writes them, request by request (encoder.encode_captures): the same bytes in every file, the same counts, the
same notes on text columns, whatever the bodies hold. And the common shapes do take the fast way."""
from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from mdc_middleware import Schema, Settings
from mdc_middleware.capture.policy import CapturePolicy
from mdc_middleware.metrics import Metrics
from mdc_middleware.payloads.captured_request import Capture
from mdc_middleware.pipeline import encoder
from mdc_middleware.pipeline.plain_runs import _encode_plain_run, encode_run

MIDNIGHT = 20_000 * 86_400.0

cells = (st.integers(-10**6, 10**6) | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
         | st.sampled_from(["setosa", "a b", "a,b", 'say "hi"', "=1+1", "-1", "+x", "@a", "é東", "back\\slash", "",
                            "tab\there", "line\nbreak", "null", "data:image/png;base64," + "A" * 40])
         | st.booleans() | st.none() | st.lists(st.integers(0, 3), max_size=2))


def rows_of(width: int):
    return st.lists(st.lists(cells, min_size=width, max_size=width), min_size=1, max_size=3)


def envelope(rows, keys):
    return st.sampled_from(keys).map(lambda key: {key: rows} if key else rows)


def body(draw, keys, width, kind):
    """A body's JSON text (or bytes that are not JSON): usually one of the shapes the fast way takes.
    ``kind``: "plain" (cells the fast way takes), "json" (any cells, in the shapes it takes) or "any"."""
    plain_only = kind == "plain"
    if kind in ("plain", "json"):
        plain = st.integers(0, 9) | st.floats(0, 10) | st.sampled_from(["setosa", "virginica"])
        cell = plain if kind == "plain" else st.sampled_from([plain] * 12 + [cells]).flatmap(lambda choice: choice)
        rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), min_size=1, max_size=3))
    else:
        rows = draw(rows_of(width) | rows_of(max(1, width - 1)))
    shapes = ["rows", "scalars", "odd"] if kind == "any" else ["rows", "scalars"] if width == 1 else ["rows"]
    shape = draw(st.sampled_from(shapes))
    if shape == "scalars":
        value = draw(envelope([row[0] for row in rows], keys))
    elif shape == "rows":
        value = draw(envelope(rows, keys))
    else:
        value = draw(st.sampled_from([{keys[1]: rows, "extra": 1}, {keys[1].title(): rows}, [], {keys[1]: []},
                                      [{"a": 1}], "[[1, 2]]", {keys[1]: {"columns": ["a"], "data": [[1]]}}]))
    text = json.dumps(value).encode()
    if kind == "any":
        text = draw(st.sampled_from([text, text, text, b"", b"{not json", b"[NaN]", gzip.compress(text),
                                     b"\x89PNG\r\n\x1a\n" + text]))
    return text


@st.composite
def runs(draw, kind="any"):
    width = draw(st.integers(1, 3))
    declared = draw(st.sampled_from([None, tuple("abc"[:width])]))
    predictions = draw(st.sampled_from([None, ("y",)]))
    schema = Schema(inputs=declared, predictions=predictions, model_name="m", model_version="1")
    settings = Settings.from_env({}, enabled=True, local_dir="/nonexistent")
    plan = CapturePolicy({"/score": schema}, settings, writer=None).select("POST", "/score")
    captures = []
    for index in range(draw(st.integers(1, 6))):
        request = body(draw, ("", "data", "inputs", "instances"), width, kind)
        response = body(draw, ("", "predictions", "result", "outputs"), 1, kind)
        content_type = "application/json" if kind != "any" else draw(st.sampled_from(
            ["application/json", "application/json", "application/json; charset=utf-8", "text/plain", ""]))
        encoding = "gzip" if request[:2] == b"\x1f\x8b" else ""
        headers = (("content-type", content_type),) + ((("content-encoding", encoding),) if encoding else ())
        timestamp = MIDNIGHT + draw(st.sampled_from([-0.5, -1e-6, 0.0, 3.25]))
        captures.append(Capture.from_raw((plan.id, request, headers, response, "application/json", "",
                                          draw(st.sampled_from([f"c-{index}", f"c,{index}", f"=c{index}"])),
                                          f"r-{index}", timestamp), plan))
    return captures, draw(st.booleans())


def files(pieces) -> dict:
    """What the pieces add to each file: its header, bytes, rows and text columns."""
    out: dict = {}
    for piece in pieces:
        key = (piece.target.designation, piece.folder, piece.header)
        payload, rows, text = out.get(key, (b"", 0, frozenset()))
        out[key] = (payload + piece.payload, rows + piece.rows, text | piece.text)
    return out


def both_ways(captures, neutralize):
    encoder._sampled.clear()
    fast_metrics = Metrics()
    fast = files(encode_run(captures, fast_metrics, neutralize))
    encoder._sampled.clear()
    general_metrics = Metrics()
    general = files(encoder.encode_captures(captures, general_metrics, neutralize))
    return (fast, fast_metrics.totals()), (general, general_metrics.totals())


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs("any") | runs("json"))
def test_runs_come_out_as_the_general_way_writes_them(run):
    captures, neutralize = run
    fast, general = both_ways(captures, neutralize)
    assert fast == general


@hypothesis_settings(max_examples=100, deadline=None)
@given(runs("plain"))
def test_plain_runs_take_the_fast_way_and_still_match(run):
    captures, neutralize = run
    assert _encode_plain_run(captures, Metrics(), neutralize) is not None
    fast, general = both_ways(captures, neutralize)
    assert fast == general


@pytest.mark.parametrize("request_body, response_body", [
    ({"data": [[5.1, 3.5, 1.4, 0.2]]}, {"predictions": [0]}),
    ([[5.1, 3.5, 1.4, 0.2], [6.2, 3.4, 5.4, 2.3]], ["setosa", "virginica"]),
    ({"instances": [[1, 2, 3, 4]]}, {"result": [[0.1]]}),
])
def test_what_scoring_clients_send_takes_the_fast_way(request_body, response_body):
    settings = Settings.from_env({}, enabled=True, local_dir="/nonexistent")
    schema = Schema(inputs=["a", "b", "c", "d"], predictions=["y"], model_name="m")
    plan = CapturePolicy({"/score": schema}, settings, writer=None).select("POST", "/score")
    captures = [Capture.from_raw((plan.id, json.dumps(request_body).encode(), (("content-type", "application/json"),),
                                  json.dumps(response_body).encode(), "application/json", "", f"c{i}", f"r{i}",
                                  MIDNIGHT + i), plan) for i in range(16)]
    metrics = Metrics()
    pieces = _encode_plain_run(captures, metrics, True)
    assert pieces is not None
    rows = len(request_body["data"] if isinstance(request_body, dict) and "data" in request_body else
               request_body if isinstance(request_body, list) else request_body["instances"])
    assert metrics.totals()[0]["rows_captured"] == 16 * rows + 16 * (2 if isinstance(response_body, list) else 1)


@pytest.mark.parametrize("text_at", [3, 7, 8, 12])
def test_text_columns_are_noted_from_the_same_first_requests_either_way(text_at):
    """Which columns held text is read from the first few requests of a target only (``sampled_text_columns``);
    past them a text label is not looked at. Runs after the first see the sampler part-used."""
    settings = Settings.from_env({}, enabled=True, local_dir="/nonexistent")
    plan = CapturePolicy({"/score": Schema(inputs=["a"], predictions=["y"], model_name="m")}, settings,
                         writer=None).select("POST", "/score")
    captures = [Capture.from_raw((plan.id, b'{"data": [[1]]}', (("content-type", "application/json"),),
                                  b'["setosa"]' if i == text_at else b"[0]", "application/json", "", f"c{i}", f"r{i}",
                                  MIDNIGHT + i), plan) for i in range(20)]
    noted = {}
    for name, encode in (("fast", encode_run), ("general", encoder.encode_captures)):
        encoder._sampled.clear()
        runs = [encode(captures[start:start + 5], Metrics(), True) for start in range(0, 20, 5)]
        noted[name] = [files(pieces) for pieces in runs]
    assert noted["fast"] == noted["general"]
    predictions = [text for pieces in noted["fast"] for (designation, _, _), (_, _, text) in pieces.items()
                   if designation == "predictions"]
    assert (frozenset({"y"}) in predictions) == (text_at < 8)


def test_a_run_with_field_rules_or_header_columns_goes_the_general_way():
    settings = Settings.from_env({}, enabled=True, local_dir="/nonexistent", collect_headers=("x-client",))
    plan = CapturePolicy({"/score": Schema(inputs=["a"], model_name="m")}, settings, writer=None).select(
        "POST", "/score")
    capture = Capture.from_raw((plan.id, b'{"data": [[1]]}', (("content-type", "application/json"), ("x-client", "k")),
                                b"[0]", "application/json", "", "c", "r", MIDNIGHT), plan)
    assert _encode_plain_run([capture], Metrics(), True) is None
    redacting = CapturePolicy({"/score": Schema(inputs=["a"], exclude=["a"], model_name="m")},
                              Settings.from_env({}, enabled=True, local_dir="/nonexistent"), writer=None)
    plan = redacting.select("POST", "/score")
    capture = Capture.from_raw((plan.id, b'{"data": [[1]]}', (("content-type", "application/json"),), b"[0]",
                                "application/json", "", "c", "r", MIDNIGHT), plan)
    assert _encode_plain_run([capture], Metrics(), True) is None


def test_a_run_holds_one_requests_parsed_body_at_a_time(monkeypatch):
    """Parsed bodies are containers the garbage collector tracks. Held for a whole run (16 requests of 100 rows:
    1,600 lists) they passed its threshold of 700 on every run and led to full collections, 20 ms pauses of
    the server; written one request at a time they stay well below it."""
    import gc

    from mdc_middleware.pipeline import plain_runs

    settings = Settings.from_env({}, enabled=True, local_dir="/nonexistent")
    plan = CapturePolicy({"/score": Schema(inputs=["a", "b", "c", "d"], predictions=["y"], model_name="m")}, settings,
                         writer=None).select("POST", "/score")
    body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * 100}).encode()
    answer = json.dumps({"predictions": [1] * 100}).encode()
    captures = [Capture.from_raw((plan.id, body, (("content-type", "application/json"),), answer, "application/json",
                                  "", f"c{i}", f"r{i}", MIDNIGHT), plan) for i in range(16)]
    live = []
    plain_rows = plain_runs.plain_rows
    monkeypatch.setattr(plain_runs, "plain_rows", lambda *args: live.append(gc.get_count()[0]) or plain_rows(*args))
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        assert _encode_plain_run(captures, Metrics(), True) is not None
    finally:
        gc.enable()
    assert len(live) == 32 and max(live) - before < 350, max(live) - before
