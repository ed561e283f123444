"""Records and captured requests → CSV pieces, one per file and header: text that is not UTF-8 or holds a NUL
is replaced and counted, a capture that cannot be read is counted and does not cost the others, rows go to the
folder of their own UTC day, in the order they came."""
import datetime as dt
import json

from mdc_middleware import Schema, Settings
from mdc_middleware.capture.policy import CapturePolicy
from mdc_middleware.metrics import Metrics
from mdc_middleware.payloads.captured_request import Capture
from mdc_middleware.pipeline.encoder import encode_captures, encode_record
from mdc_middleware.records.record import Record
from mdc_middleware.storage.paths import Target

from tests.helpers import TARGET

DAY = 86_400.0
MIDNIGHT = 20_000 * DAY


def plan(tmp_path):
    settings = Settings.from_env({}, enabled=True, local_dir=str(tmp_path))
    schema = Schema(inputs=["a", "b"], predictions=["y"], model_name="m", model_version="1")
    return CapturePolicy({"/score": schema}, settings, writer=None).select("POST", "/score")


def raw(plan, index: int, timestamp: float, body: bytes = b"") -> tuple:
    body = body or json.dumps({"data": [[index, f"t{index}"]]}).encode()
    return (plan.id, body, (("content-type", "application/json"),), json.dumps([index % 2]).encode(),
            "application/json", "", f"cid-{index}", f"rid-{index}", timestamp)


def test_text_with_a_nul_or_half_a_surrogate_pair_is_replaced_and_counted():
    metrics = Metrics()
    record = Record(TARGET, [["a\x00b", "\ud800x"], ["ok", "ok"]], ("x", "y"), "cid", MIDNIGHT, "rid", rows=2)
    encoded = encode_record(record, metrics, True, counted=True)
    text = encoded.payload.decode("utf-8")
    assert "a\ufffdb" in text and "?x" in text  # the codec's replacement for half a pair
    assert "\x00" not in text
    skipped = metrics.snapshot()["skipped"]
    assert skipped["nul_replaced"] == 1 and skipped["invalid_unicode_replaced"] == 1


def test_rows_go_to_the_folder_of_their_utc_day_in_the_order_they_came(tmp_path):
    route = plan(tmp_path)
    times = [MIDNIGHT - 2, MIDNIGHT - 1e-6, MIDNIGHT, MIDNIGHT + 1]
    pieces = encode_captures([Capture.from_raw(raw(route, i, t), route) for i, t in enumerate(times)], Metrics(),
                             True)
    inputs = [p for p in pieces if p.target.designation == "inputs"]
    days = [dt.date(1970, 1, 1) + dt.timedelta(days=20_000 + n) for n in (-1, 0)]
    assert [p.folder.rsplit("/", 3)[-3:] for p in inputs] == [day.strftime("%Y/%m/%d").split("/") for day in days]
    assert [p.rows for p in inputs] == [2, 2]
    first_cells = [line.split(",")[0] for p in inputs for line in p.payload.decode().splitlines()]
    assert first_cells == ["0", "1", "2", "3"]


def test_a_capture_that_cannot_be_read_is_counted_and_the_others_are_written(tmp_path, monkeypatch):
    route = plan(tmp_path)
    captures = [Capture.from_raw(raw(route, i, MIDNIGHT + i), route) for i in range(3)]
    broken, to_records = captures[1], Capture.to_records

    def failing_once(self, metrics):
        if self is broken:
            raise ZeroDivisionError("a bug in extraction")
        return to_records(self, metrics)

    monkeypatch.setattr(Capture, "to_records", failing_once)
    metrics = Metrics()
    pieces = encode_captures(captures, metrics, True)
    assert metrics.snapshot()["internal_errors"] == 1
    assert sorted(p.rows for p in pieces) == [2, 2]
    assert metrics.snapshot()["rows_captured"] == 4


def test_captures_are_encoded_in_runs_bounded_by_count_and_by_body_bytes():
    """Between two pauses the batcher encodes at most 16 captures or about 8 KiB of their bodies, in order;
    a reason (a str) in place of a body counts for nothing."""
    from mdc_middleware.pipeline.capture_encoding import ENCODE_CHUNK as _ENCODE_CHUNK
    from mdc_middleware.pipeline.capture_encoding import ENCODE_CHUNK_BYTES as _ENCODE_CHUNK_BYTES
    from mdc_middleware.pipeline.capture_encoding import _chunks

    small = [(0, b"x" * 10, (), b"y" * 10, "", "", f"id-{i}", "", 0.0) for i in range(40)]
    large = [(0, b"x" * 3000, (), "body_too_large", "", "", f"big-{i}", "", 0.0) for i in range(7)]
    captures = small[:20] + large + small[20:]
    chunks = list(_chunks(captures))
    assert [raw for chunk in chunks for raw in chunk] == captures
    assert all(len(chunk) <= _ENCODE_CHUNK for chunk in chunks)
    # 16 small; 4 small and 3 large (the third passes 8 KiB); 3 large; the last large and 15 small; 5 small
    assert [len(chunk) for chunk in chunks] == [16, 7, 3, 16, 5]
    assert all(sum(len(raw[1]) for raw in chunk[:-1]) < _ENCODE_CHUNK_BYTES for chunk in chunks)




def test_rows_as_json_keep_every_cell_as_written_and_the_correlation_cells(tmp_path):
    import io

    import pandas as pd

    from mdc_middleware.pipeline.encoder import ROW_JSON, as_json_rows, encode_record
    from mdc_middleware.metrics import Metrics

    target = Target("s", "r", "w", "svc", "m", "1", "inputs")
    cells = [["comma, quote \"x\"", "line\nbreak", "cr\rhere", "=formula", "東京", None, 1.5, "\\back"],
             ["", "tab\tin", "[1, 2]", "{\"k\": 1}", "-3", True, 10 ** 20, "é"]]
    record = Record(target=target, data=cells, columns=tuple(f"c{i}" for i in range(8)), correlation_id="id,1",
                    timestamp=1e9, request_id='r"1', rows=2)
    encoded = encode_record(record, Metrics(), True, counted=True)
    as_json = as_json_rows(encoded)
    read = lambda e: pd.read_csv(io.BytesIO(e.header.encode() + e.payload), dtype=str, keep_default_na=False)
    original, rows_json = read(encoded), read(as_json)
    assert as_json.rows == encoded.rows == 2 and list(rows_json.columns)[0] == ROW_JSON
    assert [json.loads(cell) for cell in rows_json[ROW_JSON]] == original[list(record.columns)].to_dict("records")
    pd.testing.assert_frame_equal(rows_json.iloc[:, 1:], original.iloc[:, 8:])
